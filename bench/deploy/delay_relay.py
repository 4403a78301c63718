"""ssh's ProxyCommand that adds a round-trip time: relays stdin/stdout to HOST:PORT, delivering every chunk half the
RTT after it arrived, in order. The kernel here has no netem qdisc, so this is how the deploy benchmark puts its
proxies as far away as another region is.

    ssh -o ProxyCommand='python3 delay_relay.py %h %p 50' host      # 50 ms round trip
"""

import asyncio
import sys
import time


async def pipe(reader: asyncio.StreamReader, write, delay: float) -> None:
    """Each chunk from reader handed to write `delay` seconds after it came; end of input passed on as None."""
    queue: asyncio.Queue = asyncio.Queue()

    async def deliver() -> None:
        while (item := await queue.get()) is not None:
            due, data = item
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            await write(data)
        await write(None)

    delivering = asyncio.create_task(deliver())
    while data := await reader.read(65536):
        queue.put_nowait((time.monotonic() + delay, data))
    queue.put_nowait(None)
    await delivering


async def main(host: str, port: int, rtt_ms: float) -> None:
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    remote_reader, remote_writer = await asyncio.open_connection(host, port)

    async def to_remote(data: bytes | None) -> None:
        if data is None:
            remote_writer.write_eof()
        else:
            remote_writer.write(data)
            await remote_writer.drain()

    async def to_stdout(data: bytes | None) -> None:
        if data is not None:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()

    one_way = rtt_ms / 2000
    await asyncio.gather(pipe(stdin, to_remote, one_way), pipe(remote_reader, to_stdout, one_way))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
