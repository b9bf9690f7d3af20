#!/usr/bin/env python3
"""A real SMTP server for the kmailops SMTP tests, built on aiosmtpd.

Modes: starttls (STARTTLS offered and required before MAIL/AUTH), tls (implicit TLS from
the first byte), none (plaintext, no STARTTLS offered). Optional AUTH PLAIN/LOGIN with one
user. Every received message is saved as <n>.eml plus <n>.json (a summary parsed with
Python's email package), every SMTP event is appended to events.log, and the chosen port
is written to --port-file once the server listens.

With --xoauth2-token-file, AUTH XOAUTH2 is offered too (as Microsoft 365 does): the bearer
token must be one of the lines of that file (read at each AUTH, so a test can revoke a token)
and the user must be --user; a refusal is a plain 535, as Exchange Online answers, or with
--xoauth2-refusal google a 334 challenge carrying a JSON error first, as Gmail answers.

Recipients steer unhappy paths: tempfail@... gets 451, reject@... gets 550 (echo-reject@...
a 550 that names the address, upper-cased), and a message to slow@... is answered only after
--slow-seconds.

The EHLO name, RSET, QUIT and every closed connection (DISCONNECT) are logged too. With
--max-connections-per-client N, a client that already has N connections open gets a
421 greeting on the next one (logged as REFUSED), as relays with a per-client limit answer.
"""
import argparse
import asyncio
import base64
import email
import email.policy
import json
import os
import socket
import ssl

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, LoginPassword


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=["starttls", "tls", "none"], required=True)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--dir", required=True)
    p.add_argument("--port-file", required=True)
    p.add_argument("--slow-seconds", type=float, default=3.0)
    p.add_argument("--xoauth2-token-file")
    p.add_argument("--xoauth2-refusal", choices=["exchange", "google"], default="exchange")
    p.add_argument("--max-connections-per-client", type=int)
    return p.parse_args()


class Recorder:
    def __init__(self, folder):
        self.folder = folder
        self.count = 0

    def event(self, line):
        with open(os.path.join(self.folder, "events.log"), "a") as f:
            f.write(line + "\n")

    def save(self, tls, session, envelope):
        self.count += 1
        base = os.path.join(self.folder, str(self.count))
        raw = envelope.original_content or envelope.content
        with open(base + ".eml", "wb") as f:
            f.write(raw)
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        summary = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "tls": tls,
            "auth_user": auth_user(session),
            "headers": {k: str(v) for k, v in msg.items()},
            "text": None,
            "html": None,
            "attachments": [],
        }
        for part in msg.walk():
            if part.is_multipart():
                continue
            if part.get_filename():
                summary["attachments"].append({
                    "filename": part.get_filename(),
                    "content_type": part.get_content_type(),
                    "content_b64": base64.b64encode(part.get_payload(decode=True)).decode(),
                })
            elif part.get_content_type() == "text/plain":
                summary["text"] = part.get_content()
            elif part.get_content_type() == "text/html":
                summary["html"] = part.get_content()
        with open(base + ".json", "w") as f:
            json.dump(summary, f)


def auth_user(session):
    data = getattr(session, "auth_data", None)
    login = getattr(data, "login", None)
    return login.decode() if isinstance(login, bytes) else None


def uses_tls(server, session):
    # STARTTLS sets session.ssl; implicit TLS shows only on the transport.
    return session.ssl is not None or server.transport.get_extra_info("sslcontext") is not None


class Handler:
    def __init__(self, recorder, slow_seconds):
        self.recorder = recorder
        self.slow_seconds = slow_seconds

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.recorder.event(f"EHLO {hostname}")
        session.host_name = hostname
        return responses

    async def handle_RSET(self, server, session, envelope):
        self.recorder.event("RSET")
        return "250 OK"

    async def handle_QUIT(self, server, session, envelope):
        self.recorder.event("QUIT")
        return "221 Bye"

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        self.recorder.event(f"MAIL {address} tls={uses_tls(server, session)}")
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self.recorder.event(f"RCPT {address}")
        if address.startswith("tempfail@"):
            return "451 4.3.0 Mailbox temporarily unavailable, try again later"
        if address.startswith("reject@"):
            return "550 5.1.1 No such user here"
        if address.lower().startswith("echo-reject@"):
            # As Postfix words it: the reply names the recipient.
            return f"550 5.1.1 <{address.upper()}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.recorder.event("DATA")
        if any(r.startswith("slow@") for r in envelope.rcpt_tos):
            await asyncio.sleep(self.slow_seconds)
        self.recorder.save(uses_tls(server, session), session, envelope)
        return "250 2.0.0 Message accepted for delivery"


class OAuth2Handler(Handler):
    """Handler that also speaks AUTH XOAUTH2 (aiosmtpd offers every auth_* method)."""

    def __init__(self, recorder, slow_seconds, user, token_file, refusal):
        super().__init__(recorder, slow_seconds)
        self.user = user
        self.token_file = token_file
        self.refusal = refusal

    async def auth_XOAUTH2(self, server, args):
        if len(args) > 1:
            raw = args[1]
        else:
            raw = await server.challenge_auth("", encode_to_b64=False)
            if raw is MISSING:
                return AuthResult(success=False, handled=True)
        try:
            text = base64.b64decode(raw).decode()
        except Exception:
            self.recorder.event("AUTH XOAUTH2 malformed")
            return AuthResult(success=False, handled=False, message="501 5.5.2 Cannot decode response")
        fields = dict(
            f.split("=", 1) for f in text.split("\x01") if "=" in f
        )
        user = fields.get("user")
        token = fields.get("auth", "").removeprefix("Bearer ")
        with open(self.token_file) as f:
            valid = f.read().split()
        ok = user == self.user and token in valid
        self.recorder.event(f"AUTH XOAUTH2 {'ok' if ok else 'refused'} user={user} token={token}")
        if ok:
            return AuthResult(success=True, auth_data=LoginPassword(user.encode(), b""))
        if self.refusal == "google":
            error = json.dumps({"status": "401", "schemes": "Bearer", "scope": "https://mail.google.com/"})
            await server.challenge_auth(base64.b64encode(error.encode()).decode(), encode_to_b64=False)
            return AuthResult(success=False, handled=False, message="535-5.7.8 Username and Password not accepted.")
        return AuthResult(success=False, handled=False, message="535 5.7.3 Authentication unsuccessful")


def main():
    args = parse_args()
    recorder = Recorder(args.dir)
    context = None
    if args.mode in ("starttls", "tls"):
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)

    def authenticator(server, session, envelope, mechanism, auth_data):
        if args.password is None:
            recorder.event(f"AUTH {mechanism} refused")
            return AuthResult(success=False, handled=False)
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == args.user.encode()
            and auth_data.password == args.password.encode()
        )
        recorder.event(f"AUTH {mechanism} {'ok' if ok else 'refused'}")
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    open_per_client = {}

    class Server(SMTP):
        refused = False
        client = None

        def connection_made(self, transport):
            # aiosmtpd calls this again after a STARTTLS upgrade on the same connection.
            if self._original_transport is None:
                client = transport.get_extra_info("peername")[0]
                limit = args.max_connections_per_client
                if limit is not None and open_per_client.get(client, 0) >= limit:
                    recorder.event("REFUSED")
                    self.refused = True
                    transport.write(b"421 4.7.0 Too many connections from your host\r\n")
                    transport.close()
                    return
                self.client = client
                open_per_client[client] = open_per_client.get(client, 0) + 1
            recorder.event("CONNECT" if self._original_transport is None else "TLS-UPGRADED")
            super().connection_made(transport)

        def connection_lost(self, error):
            if self.refused:
                return
            if self.client is not None:
                open_per_client[self.client] -= 1
                self.client = None
                recorder.event("DISCONNECT")
            super().connection_lost(error)

        def eof_received(self):
            if self.refused:
                return False
            return super().eof_received()

        def data_received(self, data):
            if not self.refused:
                super().data_received(data)

    def factory():
        kwargs = dict(hostname="kmailops-test", decode_data=False)
        if args.mode == "starttls":
            kwargs.update(tls_context=context, require_starttls=True)
        if args.user:
            kwargs.update(
                authenticator=authenticator,
                auth_required=True,
                # aiosmtpd only knows STARTTLS as "TLS"; implicit TLS is TLS from the
                # start, and plaintext mode has none to require.
                auth_require_tls=args.mode == "starttls",
            )
        if args.xoauth2_token_file:
            handler = OAuth2Handler(
                recorder, args.slow_seconds, args.user, args.xoauth2_token_file, args.xoauth2_refusal
            )
        else:
            handler = Handler(recorder, args.slow_seconds)
        return Server(handler, **kwargs)

    async def serve():
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        server = await asyncio.get_running_loop().create_server(
            factory, sock=sock, ssl=context if args.mode == "tls" else None
        )
        port = sock.getsockname()[1]
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(port))
        os.replace(tmp, args.port_file)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
