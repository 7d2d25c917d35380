"""``python -m incidents console``: the analysts' triage console in a browser.

``view.py`` follows the compacted incident topic into memory, ``app.py`` serves the pages (FastAPI, Jinja2,
htmx), ``auth.py`` decides who may use them, ``settings.py`` declares its settings. It stands on the same
modules as the CLI: verdicts are written by ``incidents.feedback.send`` and listed by ``incidents.feedback.verdicts``.
"""
