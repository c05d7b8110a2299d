"""`clothes-node up|down|kill NAME`: a second machine on this one, to try the team stack's several-node
parts without a second computer. A node is a network namespace with its own address (a veth pair:
10.231.<index>.1 on this side, .2 inside), its own hostname and a Docker engine of its own (data root,
exec root, socket) joined to this engine's swarm as a worker. It reaches the stack and the registry over
the veth as a real machine would over the LAN, and trusts the registry's CA from /etc/docker/certs.d
(the same file a real machine would get).

Root only (namespaces, links, a second dockerd). The engine is started with `nsenter --net` rather than
`ip netns exec`, which remounts /sys and leaves dockerd with "Devices cgroup isn't mounted".
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from ops.registry import DOCKER_CERTS

NETNS_DIR = Path("/var/run/netns")
NODE_NETWORK = ipaddress.ip_network("10.231.0.0/16")  # every node's link is a /24 of it


class NodeError(RuntimeError):
    """A step of making or joining a node failed; the message has the command's own error."""


@dataclass(frozen=True)
class Node:
    name: str
    index: int = 1  # the node's /24: 10.231.<index>.0
    state_root: Path = Path("/tmp/clothes-nodes")

    @property
    def address(self) -> str:
        """The node's own address (inside its namespace)."""
        return f"10.231.{self.index}.2"

    @property
    def host_address(self) -> str:
        """This machine's address on the link to the node: where the node reaches the stack."""
        return f"10.231.{self.index}.1"

    @property
    def state_dir(self) -> Path:
        return self.state_root / self.name

    @property
    def socket(self) -> str:
        return f"unix://{self.state_dir / 'docker.sock'}"

    @property
    def netns(self) -> Path:
        return NETNS_DIR / self.name

    @property
    def link(self) -> str:
        return f"{self.name[:11]}-h"  # interface names hold 15 bytes

    def enter(self) -> list[str]:
        """The prefix that runs a command in the node's network."""
        return ["nsenter", f"--net={self.netns}"]

    def client(self):  # -> docker.DockerClient
        import docker

        return docker.DockerClient(base_url=self.socket, timeout=120)


def _run(*command: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise NodeError(f"`{' '.join(command)}` failed: {result.stderr.strip() or result.stdout.strip()}")


def network_up(node: Node) -> None:
    """The namespace and its veth pair, addresses on both ends, a default route back to this machine."""
    peer = f"{node.name[:11]}-n"
    _run("ip", "netns", "add", node.name)
    _run("ip", "link", "add", node.link, "type", "veth", "peer", "name", peer)
    _run("ip", "link", "set", peer, "netns", node.name)
    _run("ip", "addr", "add", f"{node.host_address}/24", "dev", node.link)
    _run("ip", "link", "set", node.link, "up")
    inside = ("ip", "-n", node.name)
    _run(*inside, "addr", "add", f"{node.address}/24", "dev", peer)
    _run(*inside, "link", "set", peer, "up")
    _run(*inside, "link", "set", "lo", "up")
    _run(*inside, "route", "add", "default", "via", node.host_address)
    # What every serving node needs (the manager sets its own when it deploys): a replica stopping
    # during an update hands its queued connections to the one replacing it instead of resetting them.
    _run(*node.enter(), "sysctl", "-qw", "net.ipv4.tcp_migrate_req=1")


def engine_up(node: Node, timeout: float = 60) -> None:
    """dockerd in the node's network and a UTS namespace of its own (so `docker node ls` tells the
    nodes apart). No bridge and no iptables: replicas use the host network of their node."""
    state = node.state_dir
    for directory in ("data", "exec"):
        (state / directory).mkdir(parents=True, exist_ok=True)
    dockerd = [
        "dockerd",
        "--data-root",
        str(state / "data"),
        "--exec-root",
        str(state / "exec"),
        "--pidfile",
        str(state / "docker.pid"),
        "-H",
        node.socket,
        "--bridge",
        "none",
        "--iptables=false",
        "--ip6tables=false",
    ]
    script = f'hostname {node.name} && exec "$@"'
    with (state / "dockerd.log").open("ab") as log:
        command = ["unshare", "--uts", "sh", "-c", script, "sh", *node.enter(), *dockerd]
        subprocess.Popen(command, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            node.client().ping()
            return
        time.sleep(0.5)
    tail = (state / "dockerd.log").read_text(errors="replace")[-2000:]
    raise NodeError(f"the node's Docker engine did not answer on {node.socket} within {timeout:.0f} s:\n{tail}")


def join_swarm(node: Node, manager) -> str:
    """Join `manager`'s swarm as a worker; returns the node's swarm id. The manager must advertise an
    address the node reaches (`docker swarm init --advertise-addr <node.host_address>` on this machine)."""
    manager_address = manager.info()["Swarm"]["RemoteManagers"][0]["Addr"]
    token = manager.swarm.attrs["JoinTokens"]["Worker"]
    client = node.client()
    client.swarm.join(
        remote_addrs=[manager_address],
        join_token=token,
        listen_addr=f"{node.address}:2377",
        advertise_addr=node.address,
    )
    return client.info()["Swarm"]["NodeID"]


def init_swarm(node: Node, manager) -> bool:
    """Make `manager` a swarm manager advertising the node's link, unless it is one; True when it made
    one (which `down` leaves again). On real machines the manager advertises its LAN address instead."""
    if manager.info()["Swarm"]["LocalNodeState"] != "inactive":
        return False
    manager.swarm.init(advertise_addr=node.host_address, listen_addr=f"{node.host_address}:2377")
    (node.state_dir / "swarm-made-here").touch()
    return True


def up(node: Node, manager=None) -> str | None:
    """Network, engine and (with this machine's engine as `manager`) swarm membership: a swarm is made
    first if that engine has none. Returns the node's swarm id."""
    if node.netns.exists():
        raise NodeError(f"a network namespace {node.name} exists already (`clothes-node down {node.name}`)")
    try:
        network_up(node)
        engine_up(node)
        if manager is None:
            return None
        init_swarm(node, manager)
        return join_swarm(node, manager)
    except Exception:
        down(node, manager)
        raise


def _processes(node: Node) -> list[psutil.Process]:
    """The node's engine, its containerd, their shims and everything under them: the node's processes."""
    marker = str(node.state_dir)
    roots = []
    for process in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any(marker in part for part in process.info["cmdline"] or ()):
                roots.append(process)
    found = {p.pid: p for p in roots}
    for root in roots:
        with contextlib.suppress(psutil.Error):
            found.update({child.pid: child for child in root.children(recursive=True)})
    return list(found.values())


def kill(node: Node) -> int:
    """Power the node off: SIGKILL its engine and every process it runs (containers too); returns how many."""
    processes = _processes(node)
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.send_signal(signal.SIGKILL)
    psutil.wait_procs(processes, timeout=10)
    return len(processes)


def leave_swarm(node: Node, manager=None) -> None:
    """The node leaves, the manager forgets it, and a swarm `init_swarm` made for it is left again."""
    with contextlib.suppress(Exception):
        node.client().swarm.leave(force=True)
    if manager is None:
        return
    with contextlib.suppress(Exception):  # found by hostname: a killed node's engine cannot say its id
        for member in manager.nodes.list():
            if member.attrs["Description"]["Hostname"] == node.name:
                member.remove(force=True)
    if (node.state_dir / "swarm-made-here").exists():
        with contextlib.suppress(Exception):
            manager.swarm.leave(force=True)
        (node.state_dir / "swarm-made-here").unlink(missing_ok=True)


def down(node: Node, manager=None) -> None:
    """Leave the swarm, stop the engine (then anything left of it), remove the namespace, the link and the
    state directory. Each step runs whatever the others did, so a half-made node is removed too."""
    leave_swarm(node, manager)
    engines = []  # found by command line: after a kill the pid file names a pid another process may now have
    for process in _processes(node):
        with contextlib.suppress(psutil.Error):
            if process.name() == "dockerd":
                process.terminate()  # stops its containers first
                engines.append(process)
    psutil.wait_procs(engines, timeout=20)
    kill(node)  # whatever is left
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for mount in reversed(mounts):  # overlays of killed containers, the engine's netns handle
        if mount.startswith(f"{node.state_dir}/"):
            subprocess.run(["umount", "-l", mount], capture_output=True)
    subprocess.run(["ip", "link", "del", node.link], capture_output=True)
    subprocess.run(["ip", "netns", "del", node.name], capture_output=True)
    shutil.rmtree(node.state_dir, ignore_errors=True)


def _link_addresses() -> dict[str, ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """This side's node-network addresses by interface: {"node2-h": 10.231.1.1, ...}."""
    listing = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True).stdout
    found = {}
    for line in listing.splitlines():
        fields = line.split()
        address = ipaddress.ip_interface(fields[3]).ip
        if address in NODE_NETWORK:
            found[fields[1].split("@")[0]] = address
    return found


def prune(manager=None, certs_root: Path = DOCKER_CERTS) -> list[str]:
    """Remove what a node session that died with its machine or its test left behind: namespaces of ours
    (a link in 10.231.0.0/16) with no process left in them, then a swarm this engine advertises on a node
    address no interface holds any more (only `init_swarm` makes those; such a swarm cannot work), and
    registry CAs trusted for such addresses. Live nodes are left alone. Returns what was removed."""
    removed = []
    links = _link_addresses()
    for netns in sorted(NETNS_DIR.glob("*")):
        node = Node(netns.name)
        pids = subprocess.run(["ip", "netns", "pids", node.name], capture_output=True, text=True).stdout.split()
        if node.link in links and not pids:
            down(node)
            removed.append(f"namespace {node.name} and its link {node.link} ({links[node.link]})")
    held = set(_link_addresses().values())
    if manager is not None:
        with contextlib.suppress(Exception):
            swarm = manager.info()["Swarm"]
            address = ipaddress.ip_address(swarm.get("NodeAddr") or "0.0.0.0")
            if swarm["LocalNodeState"] != "inactive" and address in NODE_NETWORK and address not in held:
                manager.swarm.leave(force=True)
                removed.append(f"a swarm advertised on {address}, which no interface holds")
    for trusted in sorted(certs_root.glob("10.231.*")) if certs_root.exists() else ():
        with contextlib.suppress(ValueError):
            if ipaddress.ip_address(trusted.name.split(":")[0]) not in held:
                shutil.rmtree(trusted, ignore_errors=True)
                removed.append(f"the registry CA trusted for {trusted.name}")
    return removed


def argument_parser() -> argparse.ArgumentParser:
    """The command line, apart from running it: the docs' commands are checked against it."""
    parser = argparse.ArgumentParser(
        prog="clothes-node", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "action",
        choices=["up", "down", "kill", "prune"],
        help="prune: remove what nodes killed with their machine left (dead namespaces, a swarm "
        "on a vanished link, stale CAs)",
    )
    parser.add_argument("name", nargs="?", help="the namespace's and the node's name, e.g. node2")
    parser.add_argument("--index", type=int, default=1, help="the node's network: 10.231.<index>.0/24")
    parser.add_argument(
        "--no-swarm",
        action="store_true",
        help="up: join no swarm (else this engine's, made on the link if it has none)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser()
    args = parser.parse_args(argv)
    if args.action == "prune":
        from tasks.release.docker_engine import docker_client

        for line in prune(docker_client()) or ["nothing to prune"]:
            print(f"clothes-node prune: {line}")
        return 0
    if not args.name:
        parser.error(f"{args.action} needs a node's name")
    node = Node(args.name, args.index)
    manager = None
    if not args.no_swarm and args.action != "kill":
        from tasks.release.docker_engine import docker_client
        from tasks.release.targets.swarm import swarm_manager

        manager = docker_client()
        state = manager.info()["Swarm"]["LocalNodeState"] if manager else "no engine"
        if args.action == "up" and (manager is None or (state != "inactive" and not swarm_manager(manager))):
            print(f"this machine's engine cannot take a node ({state}); or use --no-swarm", file=sys.stderr)
            return 1
    try:
        if args.action == "up":
            node_id = up(node, manager)
            print(f"node {node.name}: {node.address}, engine {node.socket}, swarm node {node_id or 'none'}")
            print(f"run in it: {' '.join(node.enter())} <command>")
        elif args.action == "kill":
            print(f"node {node.name}: killed {kill(node)} processes")
        else:
            down(node, manager)
            print(f"node {node.name}: removed")
    except NodeError as exc:
        print(f"clothes-node: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
