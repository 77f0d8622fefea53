"""Node-side VPC networking: the bridges, router namespaces, DHCP, security groups, anti-spoofing,
VXLAN and metadata listeners a node controller applies (see vpc_contract.py for the contract)."""
