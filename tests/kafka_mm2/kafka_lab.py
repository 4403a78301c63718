"""Real single-node KRaft Kafka clusters (combined broker + controller) on loopback for the MirrorMaker 2 tests.

Each KafkaNode is a cluster of its own (directory, ports, cluster id), so a test can run a source and a target side by
side. The jars come from scripts/fetch-kafka.sh (or INFRA_OBS_KAFKA_LIBS, a directory of jars laid out like its
output: the JMX agent two levels above it).
"""

from __future__ import annotations

import base64
import functools
import os
import pathlib
import signal
import subprocess
import time
import uuid

import yaml
from kafka import KafkaAdminClient
from kafka.errors import CommitFailedError, RebalanceInProgressError
from lab_servers import free_port

REPO = pathlib.Path(__file__).resolve().parents[2]
VERSIONS = REPO / "inventories" / "lab" / "group_vars" / "all" / "versions.yml"


def lab_version(name: str) -> str:
    return str(yaml.safe_load(VERSIONS.read_text())[name])


@functools.cache
def kafka_libs() -> pathlib.Path:
    if env := os.environ.get("INFRA_OBS_KAFKA_LIBS"):
        return pathlib.Path(env)
    out = subprocess.run(
        [REPO / "scripts" / "fetch-kafka.sh"], capture_output=True, text=True, check=False, timeout=600
    )
    if out.returncode != 0:
        raise RuntimeError(f"scripts/fetch-kafka.sh failed:\n{out.stderr}")
    return pathlib.Path(out.stdout.strip().splitlines()[-1])


def jmx_agent_jar(libs: pathlib.Path) -> pathlib.Path:
    return libs.parent.parent / f"jmx_prometheus_javaagent-{lab_version('jmx_exporter_version')}.jar"


def java() -> str:
    home = os.environ.get("JAVA_HOME")
    return str(pathlib.Path(home, "bin", "java")) if home else "java"


def commit_settled(consumer, offsets: dict, timeout: float = 60) -> None:
    """consumer.commit(offsets), once the group is settled: on a busy machine a member can miss its heartbeats and
    the group rebalances under it (RebalanceInProgressError, CommitFailedError). poll() takes part in the rebalance;
    the records it returns are not wanted, since the offsets committed are given."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            consumer.commit(offsets)
            return
        except (RebalanceInProgressError, CommitFailedError):
            if time.monotonic() > deadline:
                raise
            consumer.poll(timeout_ms=500)


# The password of the stores scripts/lab-tls.sh makes.
STORE_PASSWORD = "lab-store-pass"


def make_tls(directory: pathlib.Path) -> dict[str, pathlib.Path]:
    """A throwaway CA and a broker certificate for 127.0.0.1 (scripts/lab-tls.sh): ca.pem (for kafka-python),
    server.p12 (the brokers' key and chain) and truststore.p12 (the CA, for MirrorMaker 2)."""
    done = subprocess.run(
        [REPO / "scripts" / "lab-tls.sh", directory, "127.0.0.1"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"scripts/lab-tls.sh failed:\n{done.stdout}{done.stderr}")
    return {
        "ca": directory / "ca.pem",
        "keystore": directory / "server.p12",
        "truststore": directory / "truststore.p12",
    }


def new_cluster_id() -> str:
    """A Kafka Uuid string: 16 random bytes, URL-safe base64 without padding. Like Kafka's own Uuid.randomUuid,
    never one starting with '-', which the storage tool's argument parser would take for an option."""
    while (cid := base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()).startswith("-"):
        pass
    return cid


# Log4j2 (Kafka 4.x no longer reads log4j 1.x properties): everything to one file, Kafka's own pattern.
LOG4J2 = """\
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
"""


class KafkaNode:
    """One KRaft Kafka process acting as broker and controller of its own cluster, on 127.0.0.1 with free ports.
    With tls (make_tls's files) and scram_users ({name: password}), a second client listener takes SCRAM-SHA-512
    over TLS only (secure_bootstrap); the PLAINTEXT one (bootstrap) stays for the brokers and the test's own
    producers and consumers."""

    def __init__(
        self,
        base: pathlib.Path,
        name: str = "kafka",
        libs: pathlib.Path | None = None,
        tls: dict[str, pathlib.Path] | None = None,
        scram_users: dict[str, str] | None = None,
        **overrides: str,
    ):
        self.name = name
        self.dir = base / name
        self.libs = libs or kafka_libs()
        self.port = free_port()
        self.controller_port = free_port()
        self.cluster_id = new_cluster_id()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log_path = self.dir / "server.log"
        self.tls, self.scram_users = tls, scram_users or {}
        self.secure_bootstrap = f"127.0.0.1:{free_port()}" if tls else None
        self.overrides = overrides
        self.proc: subprocess.Popen | None = None

    def config(self) -> dict[str, str]:
        listeners = f"PLAINTEXT://{self.bootstrap},CONTROLLER://127.0.0.1:{self.controller_port}"
        protocols = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
        secure = {}
        if self.tls:
            listeners += f",SASL_SSL://{self.secure_bootstrap}"
            protocols += ",SASL_SSL:SASL_SSL"
            secure = {
                "sasl.enabled.mechanisms": "SCRAM-SHA-512",
                "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;"
                ),
                "ssl.keystore.type": "PKCS12",
                "ssl.keystore.location": str(self.tls["keystore"]),
                "ssl.keystore.password": STORE_PASSWORD,
                "ssl.key.password": STORE_PASSWORD,
            }
        return {
            "process.roles": "broker,controller",
            "node.id": "1",
            # KIP-853 dynamic quorum (the 4.x way): the storage is formatted with --standalone instead of a fixed
            # controller.quorum.voters list.
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{self.controller_port}",
            "listeners": listeners,
            "advertised.listeners": listeners,
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": protocols,
            "log.dirs": str(self.dir / "data"),
            "num.partitions": "1",
            # One replica of everything; one partition for the internal topics, as their default 50 slow the
            # first group and transaction requests on a small machine.
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # 1 MiB is the smallest segment 4.x accepts.
            "log.segment.bytes": str(1024 * 1024),
            # The log cleaner takes its dedupe buffer (128 MiB by default) from the heap at start: half of the 256 MiB
            # one broker has here, which ran out once (the TLS listener's start needs more).
            "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
            **secure,
            **self.overrides,
        }

    def _java(self, main: str, *args: str, jvm: tuple[str, ...] = ("-Xmx256m",)) -> list[str]:
        return [
            java(),
            *jvm,
            "-XX:+ExitOnOutOfMemoryError",
            f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
            "-cp",
            f"{self.libs}/*",
            main,
            *args,
        ]

    def start(self, timeout: float = 60) -> KafkaNode:
        self.dir.mkdir(parents=True)
        props = self.dir / "server.properties"
        props.write_text("".join(f"{k}={v}\n" for k, v in self.config().items()))
        (self.dir / "log4j2.properties").write_text(LOG4J2.format(log=self.log_path))
        # A short-lived tool: C1 only and the serial GC start it in 1.2 s instead of 2.
        fmt = subprocess.run(
            self._java(
                "kafka.tools.StorageTool",
                *("format", "--cluster-id", self.cluster_id, "--config", str(props), "--standalone"),
                # SCRAM credentials at format time: KRaft keeps them in its metadata log.
                *(
                    arg
                    for n, p in self.scram_users.items()
                    for arg in ("--add-scram", f"SCRAM-SHA-512=[name={n},password={p}]")
                ),
                jvm=("-Xmx128m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"),
            ),
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if fmt.returncode != 0:
            raise RuntimeError(f"{self.name}: storage format failed:\n{fmt.stdout}{fmt.stderr}")
        with open(self.dir / "stdout.log", "wb") as out:
            self.proc = subprocess.Popen(
                self._java("kafka.Kafka", str(props)), stdout=out, stderr=subprocess.STDOUT, cwd=self.dir
            )
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        """Until the broker answers a metadata request and lists itself, unfenced."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        last: Exception | str = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}\n{self.log_tail()}")
            try:
                admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, bootstrap_timeout_ms=2000)
                try:
                    brokers = admin.describe_cluster()["brokers"]
                finally:
                    admin.close()
                if any(b["port"] == self.port and not b.get("is_fenced") for b in brokers):
                    return
                last = f"brokers: {brokers}"
            except Exception as e:  # not listening yet, or still starting
                last = e
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.name} not ready on {self.bootstrap} after {timeout} s ({last!r})\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        """The first ERROR lines of the server log (the cause; a failed start ends in shutdown noise) and its tail."""
        text = ""
        for path in (self.dir / "stdout.log", self.log_path):
            if path.exists():
                log = path.read_text(errors="replace").splitlines()
                errors = [line for line in log if " ERROR " in line][:5]
                text += f"--- {path}\n" + "\n".join([*errors, "...", *log[-lines:]] if errors else log[-lines:]) + "\n"
        return text

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM (a controlled shutdown), then SIGKILL if it takes longer than `timeout` seconds."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> KafkaNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
