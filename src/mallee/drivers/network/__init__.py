"""Node-side EDGE networking: the bridge, DHCP, security groups, anti-spoofing and the metadata
redirect a node controller applies for its zone (see base.py for the contract)."""
