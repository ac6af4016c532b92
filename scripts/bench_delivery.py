"""How fast the agent learns the user's decision, per delivery mode.

Over real HTTP on loopback: the service, the agent's notification endpoint (NotificationInbox)
and a development passkey. For each run, the clock starts when the approval POST returns to the
user's device and stops when the agent holds the outcome: the ping arrived (ping) or the pushed
token arrived (push). (In poll mode the answer is the next poll, up to `interval` seconds later.)
Prints the median and 90th percentile per mode.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ciba_service.agent import CibaAgent, NotificationInbox, device
from ciba_service.agent.softauthn import SoftAuthenticator
from ciba_service.config import ClientConfig, load_settings
from ciba_service.core.security import hash_secret
from ciba_service.server.notify import ApprovalNotice, Notifier
from ciba_service.server.wiring import build_provider
from ciba_service.web.app import create_app
from ciba_service.web.serving import BackgroundServer, free_port

RUNS = 20
ACTION = [{"type": "iam_policy", "actions": ["update"], "identifier": "policy-42"}]


class Links(Notifier):
    def __init__(self) -> None:
        self.links: list[str] = []
        self.cond = threading.Condition()

    def notify(self, notice: ApprovalNotice) -> None:
        with self.cond:
            self.links.append(notice.approval_url)
            self.cond.notify_all()

    def next(self) -> str:
        with self.cond:
            self.cond.wait_for(lambda: bool(self.links), timeout=10)
            return self.links.pop(0)


def main() -> None:
    port, cb_port = free_port(), free_port()
    base = f"http://localhost:{port}"
    clients = [
        ClientConfig(
            client_id=mode,
            client_secret_hash=hash_secret(mode),
            backchannel_token_delivery_mode=mode,
            backchannel_client_notification_endpoint=f"http://127.0.0.1:{cb_port}/cb",
        )
        for mode in ("ping", "push")
    ]
    settings = load_settings(issuer=base, data_dir=Path(tempfile.mkdtemp()), clients=clients, poll_interval=1)
    links = Links()
    provider = build_provider(settings, notifier=links)
    inbox = NotificationInbox()
    passkey = SoftAuthenticator()
    with (
        BackgroundServer(create_app(provider), port=port),
        BackgroundServer(inbox.app, port=cb_port),
        httpx.Client(timeout=10) as http,
    ):
        _, link = provider.add_user(username="alice")
        device.enroll(http, link, passkey)
        for mode in ("ping", "push"):
            agent = CibaAgent(issuer=base, client_id=mode, client_secret=mode)
            samples = []
            for run in range(RUNS):
                pending = agent.request(  # a fresh token, expected and bound by the inbox
                    login_hint="alice", authorization_details=ACTION, binding_message=f"B-{run}", inbox=inbox
                )
                url = links.next()
                device.approve(http, url, passkey)
                decided = time.perf_counter()
                inbox.wait(pending.auth_req_id, timeout=10)
                samples.append((time.perf_counter() - decided) * 1000)
            agent.close()
            samples.sort()
            p90 = samples[int(len(samples) * 0.9) - 1]
            print(
                f"{mode:5s} decision -> agent knows: median {statistics.median(samples):7.1f} ms, "
                f"p90 {p90:7.1f} ms ({len(samples)} runs)"
            )
    provider.store.close()


if __name__ == "__main__":
    main()
