"""Issue 23 item 4 / docs *A lost buffer*: a buffer deleted while running is carried into a fresh one.
The forwarder remembers acknowledged rows by id (`delete_through(last id)`); the fresh database
renumbers the carried rows, so the remembered id deletes rows that were never sent."""

from __future__ import annotations

from pathlib import Path

from streamedge.edge.buffer import Outbox


def test_rows_not_yet_sent_survive_a_recover_between_ack_and_delete(tmp_path: Path) -> None:
    path = tmp_path / "buffer.sqlite"
    box = Outbox(path, fsync=False)
    box.append(lambda first: [("edge-results", b"dev", b"old-%d" % i) for i in range(100)], 100)
    box.delete_through(box.peek(100)[-1].id)  # forwarded earlier: ids 1..100 gone
    box.append(lambda first: [("edge-results", b"dev", b"new-%d" % i) for i in range(20)], 20)
    sent = box.peek(5)                          # the forwarder's pass: 5 rows acknowledged
    delivered = sent[-1].id
    for suffix in ("", "-wal", "-shm"):         # the buffer deleted before the delete ran
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    assert box.recover()
    box.delete_through(delivered)               # the forwarder forgets what the broker took
    left = [row.value for row in box.peek(100)]
    box.close()
    assert left == [b"new-%d" % i for i in range(5, 20)], f"{15 - len(left)} unsent rows deleted: left {left[:3]}..."
