"""A TCP echo server for the whitelist scenario's stream backend: answers b"echo:" + what it receives."""

import socketserver


class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.sendall(b"echo:" + self.request.recv(64))


socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(("0.0.0.0", 7000), Echo).serve_forever()
