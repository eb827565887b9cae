"""aiosmtpd's Mailbox handler that takes its time over each recipient (RCPT TO), as a busy
mail server does: a client killed while it waits has handed over no message. For
`python3 -m aiosmtpd -c slow_mailbox.SlowMailbox MAILDIR SECONDS`."""
import asyncio

from aiosmtpd.handlers import Mailbox


class SlowMailbox(Mailbox):
    def __init__(self, maildir, seconds):
        super().__init__(maildir)
        self.seconds = float(seconds)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        await asyncio.sleep(self.seconds)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    @classmethod
    def from_cli(cls, parser, *args):
        if len(args) != 2:
            parser.error("SlowMailbox takes a maildir and the seconds per recipient")
        return cls(*args)
