"""Topology: network namespaces, veth pairs, addresses, routes and their teardown."""
