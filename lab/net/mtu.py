"""Packet sizes on the lab's veth links (MTU 1500), in bytes. Standard library only: the probes
(`python -m lab.calibrate.probes`) import it inside namespaces and must start fast."""

MTU_BYTES = 1500  # every veth of the topology
TCP_MSS_IPV4_BYTES = 1448  # 1500 − 20 IPv4 − 20 TCP − 12 timestamp option
TCP_MSS_IPV6_BYTES = 1428  # 1500 − 40 IPv6 − 20 TCP − 12 timestamp option
