"""Kafka client settings shared by every component, with TLS and SASL from day one.

One frozen pydantic-settings class, env prefix ``STREAMEDGE_KAFKA_``. Secrets are
``SecretStr``: they print as ``**********`` in logs and reprs, and the CLI takes them from the
environment or a config file only, never from flags (so they never show in ``--help`` or ``ps``).
The same settings render configs for kafka-python (:meth:`KafkaSettings.kafka_python_config`),
aiokafka (:meth:`KafkaSettings.aiokafka_config`) and Faust (:meth:`KafkaSettings.faust_credentials`).
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any, Literal

from pydantic import SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["KafkaSettings", "SaslMechanism", "SecurityProtocol"]

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class KafkaSettings(BaseSettings):
    """How to reach and authenticate to the Kafka cluster.

    Attributes:
        bootstrap_servers: comma-separated ``host:port`` list.
        security_protocol: ``PLAINTEXT`` (local broker only), ``SSL``, ``SASL_PLAINTEXT`` or ``SASL_SSL``.
        sasl_mechanism: ``PLAIN``, ``SCRAM-SHA-256`` or ``SCRAM-SHA-512`` (SASL protocols only).
        sasl_username, sasl_password: SASL credentials.
        ssl_cafile: CA bundle to verify brokers (system store when unset).
        ssl_certfile, ssl_keyfile, ssl_key_password: client certificate for mutual TLS.
        client_id: client id reported to brokers.
    """

    model_config = SettingsConfigDict(env_prefix="STREAMEDGE_KAFKA_", frozen=True, extra="forbid")

    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_key_password: SecretStr | None = None
    client_id: str = "streamedge"

    @model_validator(mode="after")
    def _check_security(self) -> KafkaSettings:
        if self.uses_sasl:
            if self.sasl_mechanism is None or not self.sasl_username or self.sasl_password is None:
                raise ValueError(
                    f"security_protocol {self.security_protocol} needs sasl_mechanism, sasl_username and sasl_password"
                )
        elif self.sasl_mechanism is not None:
            raise ValueError(f"sasl_mechanism is set but security_protocol is {self.security_protocol}")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("ssl_certfile and ssl_keyfile must be given together")
        return self

    @property
    def uses_sasl(self) -> bool:
        """True for SASL_PLAINTEXT and SASL_SSL."""
        return self.security_protocol.startswith("SASL")

    @property
    def uses_tls(self) -> bool:
        """True for SSL and SASL_SSL."""
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def bootstrap_list(self) -> list[str]:
        """``bootstrap_servers`` split into a list."""
        return [server.strip() for server in self.bootstrap_servers.split(",") if server.strip()]

    def ssl_context(self) -> ssl.SSLContext | None:
        """A verifying TLS context (CA file or system store, optional client cert), or None."""
        if not self.uses_tls:
            return None
        context = ssl.create_default_context(cafile=str(self.ssl_cafile) if self.ssl_cafile else None)
        if self.ssl_certfile is not None and self.ssl_keyfile is not None:
            password = self.ssl_key_password.get_secret_value() if self.ssl_key_password else None
            context.load_cert_chain(str(self.ssl_certfile), str(self.ssl_keyfile), password=password)
        return context

    def _sasl_fields(self) -> dict[str, Any]:
        if not self.uses_sasl or self.sasl_password is None:
            return {}
        return {
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_plain_username": self.sasl_username,
            "sasl_plain_password": self.sasl_password.get_secret_value(),
        }

    def kafka_python_config(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python's KafkaProducer/KafkaConsumer/KafkaAdminClient."""
        config: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_list,
            "security_protocol": self.security_protocol,
            "client_id": self.client_id,
            **self._sasl_fields(),
        }
        if self.uses_tls:
            config["ssl_context"] = self.ssl_context()
        return config

    def aiokafka_config(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka's AIOKafkaProducer/AIOKafkaConsumer."""
        config: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
            "client_id": self.client_id,
            **self._sasl_fields(),
        }
        if self.uses_tls:
            config["ssl_context"] = self.ssl_context()
        return config

    def faust_broker_url(self) -> str:
        """Faust's ``broker`` setting: ``kafka://host:port;host:port``."""
        return "kafka://" + ";".join(self.bootstrap_list)

    def faust_credentials(self) -> Any:
        """Faust's ``broker_credentials`` (SASL or SSL credentials), or None for PLAINTEXT."""
        if self.security_protocol == "PLAINTEXT":
            return None
        import faust

        if self.uses_sasl and self.sasl_password is not None:
            return faust.SASLCredentials(
                username=self.sasl_username,
                password=self.sasl_password.get_secret_value(),
                ssl_context=self.ssl_context(),
                mechanism=self.sasl_mechanism,
            )
        return faust.SSLCredentials(self.ssl_context())
