"""The ``ha`` topology's router backend: two passnat daemons and keepalived (docs/ha.md, docs/lab.md).

::

    LAN switch ── rlan  router  (passnat + keepalived, priority 150)  rwan ── WAN switch
               └─ rlan  router2 (passnat + keepalived, priority 100)  rwan ─┘
                  router hasync 10.255.0.1/30 ──── 10.255.0.2/30 hasync router2

Both passnat daemons run the same configuration (the lab's, plus the ``ha
sync`` lines of each side) with ``--prepare``: each router keeps kernel
addresses of its own on both segments (192.168.0.2/203.0.113.2 and .3) for
keepalived's VRRP, which ``--prepare``'s tables let through.  keepalived is
Debian's, started in each router namespace in the foreground with its own
pid files and the configuration ``passnat ha keepalived-config`` prints
(passnat/ha/keepalived.py): one VRRP instance per segment in a sync group,
notify scripts calling ``passnat ha master|backup``, ``passnat ha check`` as
the track script.

``failover`` is the acceptance experiment of issue 12: five kinds of flows
through the master, SIGKILL of the master's passnat, the time until the
backup forwards, then the old master's passnat restarted (it comes back as
backup and receives a full transfer) and a planned switch back (the
``ha-standby`` track file), with what each flow saw.
"""
from __future__ import annotations

import json
import re
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from passnat.ha.keepalived import Segment
from passnat.ha.keepalived import render as keepalived_conf
from passnat.lab.proc import LabError, Proc, nsrun, spawn
from passnat.lab.routers import PassnatRouter, flatten_counters, passnat_argv
from passnat.lab.topology import (
    HA_KERNEL,
    HA_SYNC,
    HA_SYNC_IF,
    PREFIX_LEN,
    ROUTER,
    ROUTER2,
    ROUTER_LAN,
    ROUTER_LAN_IF,
    ROUTER_WAN,
    ROUTER_WAN_IF,
)
from passnat.lab.variants import Variant

KEY = "passnat-lab-ha-shared-key"
PRIORITY = {ROUTER: 150, ROUTER2: 100}


def require_keepalived() -> None:
    if shutil.which("keepalived") is None:
        raise LabError("keepalived is missing: run `make deps` (scripts/install-deps.sh installs Debian's keepalived)")


class HaRouter(PassnatRouter):
    """One passnat of the pair: its own run directory, kernel addresses kept, ``--prepare``."""

    def __init__(self, ns: str, box: str, run_dir: Path, log_level: str = "info"):
        super().__init__(ns, run_dir, log_level)
        self.box = box
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.extra_args = ["--prepare"]

    def _prepare(self) -> None:
        if self._prepared:
            return
        lan, wan = HA_KERNEL[self.box]
        for itf, addr in ((ROUTER_LAN_IF, lan), (ROUTER_WAN_IF, wan)):
            nsrun(self.ns, ["ip", "addr", "replace", f"{addr}/{PREFIX_LEN}", "dev", itf])
            nsrun(self.ns, ["ip", "link", "set", itf, "up"])
        nsrun(self.ns, ["sysctl", "-qw", "net.ipv4.ip_forward=0"])
        self._prepared = True

    def config_text(self, variant: Variant) -> str:
        local, peer = HA_SYNC[self.box]
        # random ports: a mapping the sync did not carry would come back as another port after a
        # failover (with port preservation a fresh router would often pick the same one by chance)
        return variant.passnat_config() + ("nat option port-assignment random\n"
                                           f"ha sync peer {peer}\nha sync local {local}\n"
                                           f"ha sync interface {HA_SYNC_IF}\nha sync key \"{KEY}\"\n")

    def apply(self, variant: Variant) -> None:
        self.stop()
        self._prepare()
        self.config_path.write_text(self.config_text(variant))
        self.variant = variant
        self.start()

    def start(self) -> None:
        with open(self.log, "a") as f:
            f.write(f"==== {time.strftime('%H:%M:%S')} start\n")
        self.proc = spawn(f"passnat-{self.box}", self.ns, self.command(), log=self.log)
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline:
            if not self.proc.alive():
                raise LabError(f"passnat run in {self.box} exited (log {self.log})")
            if self.control.exists() and self.ha_status() is not None:
                return
            time.sleep(0.1)
        raise LabError(f"passnat in {self.box} did not answer within 20 s (log {self.log})")

    def kill(self) -> None:
        """SIGKILL: the box's passnat dies without a clean stop (its nftables tables stay)."""
        if self.proc is not None:
            self.proc.stop(signal.SIGKILL, grace=0.0)
            self.proc = None

    def ha_status(self) -> dict[str, Any] | None:
        cp = nsrun(self.ns, passnat_argv("ha", "status", "--json", "--control", str(self.control)), check=False,
                   timeout=20)
        if cp.returncode != 0:
            return None
        try:
            data = json.loads(cp.stdout)
        except ValueError:
            return None
        return data if isinstance(data, dict) else None


class HaPair:
    """The router backend of the ``ha`` topology (the ``RouterBackend`` interface of routers.py)."""

    name = "passnat"
    title = "passnat HA pair (keepalived)"

    def __init__(self, lab: Any):
        require_keepalived()
        self.lab = lab
        self.routers = {b: HaRouter(lab.ns(b), b, lab.run_dir / b) for b in (ROUTER, ROUTER2)}
        self.keepalived: dict[str, Proc] = {}
        self.variant: Variant | None = None

    # ------------------------------------------------------------ RouterBackend

    def apply(self, variant: Variant) -> None:
        self.stop()
        for r in self.routers.values():
            (r.run_dir / "ha-role").unlink(missing_ok=True)
            r.apply(variant)
        # keepalived one router at a time: with ``nopreempt`` whichever keepalived first finds no
        # master keeps the role, and started together the 0.4 s by which router's higher priority
        # wins is lost to one slow health check on a loaded machine (router2 then stays master).
        # router alone becomes master; router2, started next, hears its adverts and stays backup.
        self.start_keepalived(ROUTER)
        self.wait_roles(ROUTER, timeout=30.0)
        self.start_keepalived(ROUTER2)
        time.sleep(2.5)  # longer than router2's master-down interval (3 x 0.5 s + skew)
        self.variant = variant
        self.wait_roles(ROUTER, timeout=20.0)

    def stop(self) -> None:
        for box in list(self.keepalived):
            self.stop_keepalived(box)
        for r in self.routers.values():
            r.stop()

    def status_lines(self) -> list[str]:
        m = self.master()
        return self.routers[m].status_lines() if m else ["(no master)"]

    def counters(self) -> dict[str, int]:
        m = self.master()
        return self.routers[m].counters() if m else {}

    def describe(self) -> str:
        return ("passnat on router and router2 (" + " ".join(self.routers[ROUTER].command()[4:])
                + "), keepalived VRRP v3 on rlan/rwan, sync over hasync")

    # ------------------------------------------------------------ keepalived

    def keepalived_conf(self, box: str) -> Path:
        r = self.routers[box]
        segs = [Segment("lan", ROUTER_LAN_IF, ROUTER_LAN, 51), Segment("wan", ROUTER_WAN_IF, ROUTER_WAN, 52)]
        path = r.run_dir / "keepalived.conf"
        path.write_text(keepalived_conf(segs, priority=PRIORITY[box], control=str(r.control),
                                        standby=str(r.run_dir / "ha-standby"), passnat=" ".join(passnat_argv()),
                                        name=f"passnat-{box}"))
        return path

    def start_keepalived(self, box: str) -> None:
        r = self.routers[box]
        conf = self.keepalived_conf(box)
        (r.run_dir / "ha-standby").write_text("0\n")
        argv = ["keepalived", "--dont-fork", "--log-console", "--log-detail", "--no-syslog", "--vrrp",
                "--use-file", str(conf), "--pid", str(r.run_dir / "keepalived.pid"),
                "--vrrp_pid", str(r.run_dir / "keepalived-vrrp.pid")]
        self.keepalived[box] = spawn(f"keepalived-{box}", r.ns, argv, log=r.run_dir / "keepalived.log")

    def stop_keepalived(self, box: str) -> None:
        p = self.keepalived.pop(box, None)
        if p is not None:
            p.stop(signal.SIGTERM, grace=5.0)

    # ------------------------------------------------------------ roles

    def roles(self) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for box, r in self.routers.items():
            st = r.ha_status() if r.proc is not None else None
            out[box] = st["role"] if st else None
        return out

    def master(self) -> str | None:
        masters = [b for b, role in self.roles().items() if role == "master"]
        return masters[0] if len(masters) == 1 else None

    def wait_roles(self, master: str, timeout: float) -> float:
        """Wait until ``master`` is the only master and the other's sync is connected; seconds taken."""
        t0 = time.monotonic()
        other = ROUTER2 if master == ROUTER else ROUTER
        while time.monotonic() - t0 < timeout:
            sm = self.routers[master].ha_status()
            so = self.routers[other].ha_status() if self.routers[other].proc is not None else None
            if sm and sm["role"] == "master" and (so is None or so["role"] == "backup"):
                return time.monotonic() - t0
            time.sleep(0.1)
        raise LabError(f"{master} did not become the only master within {timeout:.0f} s (roles {self.roles()}; "
                       f"keepalived logs in {self.lab.run_dir}/*/keepalived.log)")

    def standby(self, box: str, on: bool) -> None:
        """The planned switch: keepalived's track file (1: give up mastership)."""
        (self.routers[box].run_dir / "ha-standby").write_text("1\n" if on else "0\n")


# ------------------------------------------------------------------ the acceptance experiment


def _pptp_gaps(r: dict[str, Any]) -> str:
    return f"{r['got_rep']}/{r['sent_req']} LCP echo replies, longest gap {r.get('max_gap_s')} s"


def failover(lab: Any, pair: HaPair, progress: Any = print, duration: float = 60.0) -> dict[str, Any]:
    """Five flows through the master; SIGKILL of its passnat; the backup takes over; the old master
    comes back as backup with a full transfer; a planned switch back.  Returns what happened
    (``ok`` and per-flow details); peers are stopped by the caller (``lab.stop_peers``)."""
    from passnat.lab.pptp import PptpServer, start_client
    from passnat.lab.scenarios.base import go, result_of
    from passnat.lab.strongswan import PROTECTED, Charon
    from passnat.lab.topology import HOSTS

    srv1, srv2 = HOSTS["srv1"].addr, HOSTS["srv2"].addr
    duration = max(duration, 40.0)  # the flows outlive the last comparison (about 31 s in)
    out: dict[str, Any] = {"flows": {}, "events": []}

    def event(text: str) -> None:
        out["events"].append(text)
        progress(text)

    pair.wait_roles(ROUTER, 20.0)
    # ---- the flows: IKEv2 NAT-T (pc3), PPTP (pc1 -> srv2), raw ESP x2 (pc1, pc2 -> srv1),
    #      TCP (lansrv -> srv2), UDP (pc2 -> srv2)
    lab.run_in("srv1", ["ip", "addr", "replace", f"{PROTECTED}/32", "dev", "lo"])
    ike = [Charon(lab, "srv1"), Charon(lab, "pc3", server="srv1")]
    for n in ike:
        n.start()
    for n in ike:
        n.wait_ready()
        n.load()
    init = ike[1].initiate().communicate(timeout=30)[0]
    if "successfully" not in init:
        raise LabError("IKEv2 initiate failed: " + " | ".join(init.strip().splitlines()[-2:]))
    ike_before = _ike_sas(ike[0])
    ping = lab.spawn("ping-pc3", "pc3", ["ping", "-i", "0.2", "-W", "1", "-w", str(int(duration)), PROTECTED],
                     pipe=True)
    pptpd = PptpServer(lab, "srv2")
    pptpd.start()
    pptpd.wait_listening()
    pptp = start_client(lab, "pc1", srv2, duration=duration, callid=0x1234, localbind=HOSTS["pc1"].addr,
                        interval=0.2)
    esp_srv = lab.spawn("esp-server-srv1", "srv1", lab.peer_argv("esp_peer", "server", "--barrier",
                                                                   "--duration", str(duration + 30)), pipe=True)
    go(esp_srv)
    count = int(duration / 0.2)
    esp = [lab.spawn(f"esp-client-{h}", h, lab.peer_argv("esp_peer", "client", "--name", h, "--server", srv1,
                                                         "--count", str(count), "--interval", "0.2", "--barrier"),
                     pipe=True) for h in ("pc1", "pc2")]
    tcp_sink = lab.spawn("tcp-sink-srv2", "srv2", lab.peer_argv("netprobe", "tcp-sink", "--port", "9301", "--barrier",
                                                                     "--duration", str(duration + 30)),
                         pipe=True)
    udp_echo = lab.spawn("udp-echo-srv2", "srv2", lab.peer_argv("netprobe", "udp-echo", "--port", "9302", "--barrier",
                                                                "--duration", str(duration + 20)), pipe=True)
    go(tcp_sink, udp_echo)
    tcp = lab.spawn("tcp-send-lansrv", "lansrv", lab.peer_argv(
        "netprobe", "tcp-send", "--to", srv2, "--port", "9301", "--bytes", str(int(duration * 150_000)),
        "--rate", "150000", "--barrier", "--timeout", "30"), pipe=True)
    udp = lab.spawn("udp-flow-pc2", "pc2", lab.peer_argv(
        "netprobe", "udp-flow", "--to", srv2, "--port", "9302", "--duration", str(duration - 5),
        "--interval", "0.05", "--barrier"), pipe=True)
    go(pptp, *esp, tcp, udp)
    t_start = time.monotonic()
    time.sleep(8.0)
    before = _mappings(pair.routers[ROUTER])
    backup_before = _mappings(pair.routers[ROUTER2])
    out["sessions_master"], out["sessions_backup"] = len(before), len(backup_before)
    event(f"t={time.monotonic() - t_start:.1f} s: all flows up through router; sessions: master "
          f"{out['sessions_master']}, backup {out['sessions_backup']}")
    # ---- failure: SIGKILL the master's passnat
    t_kill = time.monotonic()
    pair.routers[ROUTER].kill()
    took = pair.wait_roles(ROUTER2, 10.0)
    out["failover_s"] = round(time.monotonic() - t_kill, 2)
    event(f"t={t_kill - t_start:.1f} s: SIGKILL of router's passnat; router2 is master after "
          f"{out['failover_s']} s (roles seen after {took:.2f} s)")
    time.sleep(6.0)
    after = _mappings(pair.routers[ROUTER2])
    kept = [k for k, v in before.items() if after.get(k) == v]
    changed = [f"{k}: {v} -> {after.get(k)}" for k, v in before.items() if k in after and after[k] != v]
    out["mappings"] = {"before": len(before), "same_after": len(kept), "changed": changed,
                       "ok": len(kept) == len(before) and not changed and backup_before == before}
    event(f"t={time.monotonic() - t_start:.1f} s: router2's sessions: {len(kept)} of the {len(before)} the master "
          f"had are there with the same id, outside port, SPI owners and Call IDs"
          + (f"; CHANGED: {'; '.join(changed)}" if changed else ""))
    # ---- the old master's passnat comes back: backup, full transfer
    pair.routers[ROUTER].start()
    t_back = time.monotonic()
    deadline = t_back + 15.0
    st: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        st = pair.routers[ROUTER].ha_status()
        if st and st["role"] == "backup" and st.get("last_bulk", {}).get("received"):
            break
        time.sleep(0.2)
    st = st or {}
    out["rejoin"] = {"role": st.get("role"), "sessions": st.get("sessions"), "bulk": st.get("last_bulk", {}),
                     "ok": st.get("role") == "backup" and bool(st.get("last_bulk", {}).get("received"))}
    event(f"t={t_back - t_start:.1f} s: router's passnat restarted: {st.get('role')}, "
          + ("full transfer received" if out["rejoin"]["ok"] else "NO full transfer")
          + f", {st.get('sessions')} session(s); sync counters {st.get('counters')}")
    time.sleep(6.0)
    # ---- planned switch back: router2 gives up mastership (keepalived track file)
    t_sw = time.monotonic()
    pair.standby(ROUTER2, True)
    pair.wait_roles(ROUTER, 10.0)
    out["switch_back_s"] = round(time.monotonic() - t_sw, 2)
    event(f"t={t_sw - t_start:.1f} s: planned switch back to router took {out['switch_back_s']} s")
    time.sleep(3.0)
    pair.standby(ROUTER2, False)
    back = _mappings(pair.routers[ROUTER])
    kept_back = [k for k, v in before.items() if back.get(k) == v]
    changed_back = [f"{k}: {v} -> {back.get(k)}" for k, v in before.items() if k in back and back[k] != v]
    out["mappings_back"] = {"same_after": len(kept_back), "changed": changed_back,
                            "ok": len(kept_back) == len(before) and not changed_back}
    event(f"t={time.monotonic() - t_start:.1f} s: after the switch back router has {len(kept_back)} of the "
          f"{len(before)} sessions unchanged" + (f"; CHANGED: {'; '.join(changed_back)}" if changed_back else ""))
    # ---- what every flow saw
    flows = out["flows"]
    tr = result_of(tcp, duration + 30)
    tcp_sink.stop()
    conns = result_of(tcp_sink, 10).get("connections", [])
    flows["tcp"] = {"ok": bool(tr.get("verified")) and len(conns) == 1,
                    "text": f"{tr.get('bytes')} bytes {'verified by the receiver (sha256)' if tr.get('verified') else 'NOT verified'}"
                            f" in {tr.get('seconds')} s, {len(conns)} connection(s) at the server "
                            f"({', '.join(c['peer'] for c in conns)})" + (f", error {tr['error']}" if tr.get("error") else "")}
    ur = result_of(udp, duration + 10)
    udp_echo.stop()
    sources = result_of(udp_echo, 10).get("sources", [])
    flows["udp"] = {"ok": len(sources) == 1 and ur["got"] >= ur["sent"] * 0.85,
                    "text": f"{ur['got']}/{ur['sent']} echoes, longest gap {ur['max_gap_s']} s, the server saw "
                            f"{', '.join(sources)}"}
    pr = result_of(pptp, duration + 30)
    pptpd.stop()
    servers = pptpd.results()
    calls = [s for s in servers if "pc1" in s.get("peer_tags", {})]
    flows["pptp"] = {"ok": pr["got_rep"] >= pr["sent_req"] * 0.8 and not pr["foreign_rep"] and len(calls) == 1
                     and pr.get("end") == "duration",
                     "text": f"{_pptp_gaps(pr)}, {pr['foreign_rep']} foreign, one server call: {len(calls) == 1}, "
                             f"ended by {pr.get('end')}"}
    er = [result_of(p, duration + 30) for p in esp]
    flows["esp"] = {"ok": all(r["ok"] >= r["sent"] * 0.8 and not r["foreign"] and not r["bad"] for r in er),
                    "text": "; ".join(f"{r['name']} {r['ok']}/{r['sent']} replies, longest gap {r.get('max_gap_s')} s, "
                                      f"{sum(r['foreign'].values())} foreign" for r in er)}
    pg = ping.output(duration + 10)
    m = re.search(r"(\d+) packets transmitted, (\d+) received", pg)
    sent, recv = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    ike_after = _ike_sas(ike[0])
    for n in reversed(ike):
        n.stop()
    same_sa = bool(ike_before) and ike_before == ike_after
    flows["ikev2"] = {"ok": recv >= sent * 0.8 and same_sa,
                      "text": f"{recv}/{sent} pings through the tunnel; IKE_SA {'unchanged' if same_sa else 'CHANGED'} "
                              f"({ike_before} -> {ike_after})"}
    out["ok"] = (all(f["ok"] for f in flows.values()) and out["failover_s"] <= 3.0 and out["rejoin"]["ok"]
                 and out["mappings"]["ok"] and out["mappings_back"]["ok"])
    out["counters_router2"] = {k: v for k, v in flatten_counters(
        pair.routers[ROUTER2].ha_status() or {}).items() if k.startswith("ha_")}
    return out


def _mappings(r: HaRouter) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """The router's sessions by (protocol, inside, inside port, remote, remote port): id, outside
    port, ESP SPIs, PPTP Call IDs -- what must not change across a failover."""
    cp = nsrun(r.ns, passnat_argv("show", "status", "nat", "--json", "--control", str(r.control)), check=False,
               timeout=20)
    if cp.returncode != 0:
        return {}
    out = {}
    for s in json.loads(cp.stdout):
        if s.get("id") is None:
            continue
        esp = s.get("esp") or {}
        pptp = s.get("pptp") or {}
        calls = tuple((c["inside_call_id"], c["outside_call_id"], c["peer_call_id"]) for c in pptp.get("calls", []))
        key = (s["protocol"], s["inside"], s["inside_port"], s["remote"], s["remote_port"])
        out[key] = (s["id"], s["outside"], s["outside_port"], tuple(esp.get("in_spis", [])),
                    tuple(esp.get("out_spis", [])), calls)
    return out


def _ike_sas(charon: Any) -> list[str]:
    """The responder's IKE_SAs as 'unique id: SPIs' (a new IKE_SA would change them)."""
    text = charon.list_sas()
    return sorted(re.findall(r"#\d+, ESTABLISHED, IKEv2, [0-9a-f]+_i\*? [0-9a-f]+_r\*?", text))
