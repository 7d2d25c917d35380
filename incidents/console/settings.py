"""Settings of ``python -m incidents console``, each declared once (see ``core.settings``)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from core.acl import Grant, topic
from core.kafka import KafkaSettings
from core.settings import Settings


class ConsoleSettings(Settings):
    """The triage console: incidents best priority first, their detail, "mark benign", and the verdicts."""

    model_config = SettingsConfigDict(env_prefix="CONSOLE_")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    incident_topic: str = Field("kdd-incidents", min_length=1, description="the incident service's compacted "
                                "incident topic (read from its start, then followed)")
    feedback_topic: str = Field("kdd-feedback", min_length=1, description="where \"mark benign\" writes verdicts "
                                "(the power to mute alerts: see the README's ACL table)")
    state_topic: str | None = Field(None, description="the incident service's state topic, for which verdicts are "
                                    "in force (default: INCIDENT_TOPIC.state)")
    host: str = Field("127.0.0.1", min_length=1, description="address to bind (0.0.0.0 exposes the console and "
                      "its \"mark benign\" to the network: set a token then)")
    port: int = Field(8090, ge=0, le=65_535, description="port to bind (0: any free port, printed at start)")
    token: SecretStr | None = Field(None, description="when set, every request needs it: as the password of HTTP "
                                    "basic auth (any user name) or as 'Authorization: Bearer TOKEN'")
    allowed_hosts: list[str] = Field(default_factory=list, description="host names the console answers to (its "
                                     "Host header; DNS rebinding defence); default: the bind address and localhost; "
                                     "'*' answers any (behind a proxy that checks it)")
    page_size: int = Field(50, ge=5, le=1_000, description="incidents per page of the list")
    max_incidents: int = Field(20_000, ge=100, le=10_000_000, description="incidents kept in memory at most; past "
                               "it the closed ones seen longest ago are dropped from the console's view")
    max_verdict_s: float = Field(30 * 86_400.0, gt=0, le=365 * 86_400, description="the longest verdict an "
                                 "analyst may ask for here")

    @property
    def hosts_allowed(self) -> frozenset[str] | None:
        """Host names (lower case, no port) a request may name; None when any is allowed."""
        names = self.allowed_hosts or [self.host, "localhost", "127.0.0.1", "::1"]
        return None if "*" in names else frozenset(n.strip().lower().strip("[]") for n in names)

    @property
    def state(self) -> str:
        return self.state_topic or f"{self.incident_topic}.state"

    def acls(self) -> list[Grant]:
        """What the console needs (``core.acl``): it reads incidents and verdicts and writes verdicts, so its
        principal can mute alerts like the feedback CLI's."""
        return [topic(self.incident_topic, "READ", "the incidents it lists"),
                topic(self.state, "READ", "which verdicts are in force"),
                topic(self.feedback_topic, "READ", "the verdicts page"),
                topic(self.feedback_topic, "WRITE", "\"mark benign\" (the power to mute alerts: analysts only)")]
