"""The VPN passthrough lab: real PPTP, IPsec and ESP peers through passnat and the kernel NAT.

Modules (each states its own invariants):
  * ``topology``  -- namespaces, switches and wires (docs/lab.md draws them);
  * ``proc``      -- running commands and background programs in namespaces, by pid;
  * ``variants``  -- router settings as a passnat config and as the kernel-NAT equivalent;
  * ``routers``   -- the router namespace backends: ``passnat run`` or the kernel NAT;
  * ``lab``       -- one running lab (state file, up/down, peers);
  * ``peers``     -- programs run inside the hosts (pppd stand-in, scapy ESP, probes);
  * ``scenarios`` -- the scenarios of issue 6, each a check with a verdict and evidence;
  * ``report``, ``demo``, ``cli`` -- ``passnat lab ...`` and ``make demo``.

Network safety: the lab only sends packets over veth pairs between the
namespaces it created; every process it starts is stopped by its pid and
every namespace it creates is deleted by ``down`` (also after a crash).
"""
