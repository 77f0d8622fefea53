"""The tiny guest's boot scripts and configuration files (busybox sh), as installed into its tree.

Boot runs in two stages so that one initramfs serves both image variants: `/init` (stage 1) mounts
the kernel file systems, loads the drivers and either switches to the root disk named by `root=` or
stays in RAM; then busybox init runs `/etc/init.d/rcS` (stage 2) for network, EC2 metadata, SSH and
ACPI. Pitfalls measured in shared/notes/vm-host-facts.md: busybox `wget -T` segfaults (so
`timeout 3 wget`), and dropbear needs devpts and refuses accounts whose password field starts with "!".
"""

from __future__ import annotations

READY_PREFIX = "MALLEE-READY instance-id="
ROOT_PREFIX = "MALLEE-ROOT "
HOSTNAME = "mallee"

INIT = r"""#!/bin/sh
# Stage 1: kernel file systems, drivers, then the root file system (disk if root= says so, else RAM).
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts
mount -t devpts -o gid=5,mode=620 devpts /dev/pts
release=$(uname -r)
while read -r module; do
    insmod "/lib/modules/$release/$module" 2>/dev/null
done < /etc/modules-load
root=
for arg in $(cat /proc/cmdline); do
    case "$arg" in root=*) root="${arg#root=}" ;; esac
done
if [ -n "$root" ]; then
    # virtio disks are probed asynchronously after virtio_blk loads: wait up to 5 s.
    tries=0
    while [ ! -b "$root" ] && [ "$tries" -lt 50 ]; do sleep 0.1; tries=$((tries + 1)); done
    if mount -t ext4 "$root" /newroot; then
        for fs in /proc /sys /dev; do mount --move "$fs" "/newroot$fs"; done
        exec switch_root /newroot /sbin/init
    fi
    echo "mallee: cannot mount $root; running from the initramfs"
fi
exec /sbin/init
"""

RCS = r"""#!/bin/sh
# Stage 2 (busybox init sysinit): hostname, DHCP, EC2 metadata, ssh, ACPI power button, user-data.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mounted() { grep -q " $1 " /proc/mounts; }
mounted /proc || mount -t proc proc /proc
mounted /sys || mount -t sysfs sysfs /sys
mounted /dev || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts
mounted /dev/pts || mount -t devpts -o gid=5,mode=620 devpts /dev/pts
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/mallee /tmp /var/log /root/.ssh
chmod 700 /root /root/.ssh
hostname -F /etc/hostname
ip link set lo up

root=$(awk '$2 == "/" && $1 != "rootfs" { print $1 }' /proc/mounts | tail -n 1)
echo "MALLEE-ROOT ${root:-initramfs}"

MD=http://169.254.169.254/latest
token=
# IMDSv2 first: busybox wget cannot PUT, so the token request is written by hand to nc.
imds_token() {
    printf 'PUT /latest/api/token HTTP/1.0\r\nHost: 169.254.169.254\r\n%s\r\n\r\n' \
        'X-aws-ec2-metadata-token-ttl-seconds: 21600' |
        timeout 3 nc 169.254.169.254 80 2>/dev/null | tr -d '\r' |
        awk 'NR == 1 && $2 != "200" { exit } body { print } /^$/ { body = 1 }'
}
fetch() {  # fetch PATH FILE: IMDSv2 with a token, else IMDSv1
    if [ -n "$token" ]; then
        timeout 3 wget -q --header "X-aws-ec2-metadata-token: $token" -O "$2" "$MD/$1" 2>/dev/null
    else
        timeout 3 wget -q -O "$2" "$MD/$1" 2>/dev/null
    fi || { rm -f "$2"; return 1; }
}

instance_id=unknown
if ip link show eth0 >/dev/null 2>&1; then
    ip link set eth0 up
    # -n: give up if no lease; without -q it stays in the background to renew the lease.
    if udhcpc -i eth0 -n -t 5 -T 1 -S -s /usr/share/udhcpc/default.script >/dev/null 2>&1; then
        token=$(imds_token)
        if fetch meta-data/instance-id /run/mallee/instance-id; then
            instance_id=$(cat /run/mallee/instance-id)
        fi
        if fetch meta-data/local-hostname /run/mallee/local-hostname; then
            cp /run/mallee/local-hostname /etc/hostname
            hostname -F /etc/hostname
        fi
        if fetch meta-data/public-keys/0/openssh-key /run/mallee/openssh-key; then
            cat /run/mallee/openssh-key > /root/.ssh/authorized_keys
            chmod 600 /root/.ssh/authorized_keys
        fi
        fetch user-data /run/mallee/user-data
    fi
fi

mkdir -p /etc/dropbear
key=/etc/dropbear/dropbear_ed25519_host_key
[ -s "$key" ] || dropbearkey -t ed25519 -f "$key" >/dev/null 2>&1
dropbear -r "$key" -p 22 -s
echo "-----BEGIN SSH HOST KEY KEYS-----"
dropbearkey -y -f "$key" 2>/dev/null | grep '^ssh-'
echo "-----END SSH HOST KEY KEYS-----"
acpid -c /etc/acpi -l /var/log/acpid.log

echo "MALLEE-READY instance-id=$instance_id"

if head -c 2 /run/mallee/user-data 2>/dev/null | grep -q '^#!'; then
    chmod 700 /run/mallee/user-data
    /run/mallee/user-data > /var/log/user-data.log 2>&1
    status=$?
    cat /var/log/user-data.log
    echo "MALLEE-USERDATA exit=$status"
fi
"""

UDHCPC_SCRIPT = r"""#!/bin/sh
# udhcpc event handler: address, default route, resolv.conf and hostname from the lease.
case "$1" in
deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    ;;
bound | renew)
    if ! ip -4 addr show dev "$interface" | grep -q " $ip/"; then
        ip -4 addr flush dev "$interface"
        ip addr add "$ip/${mask:-24}" dev "$interface"
    fi
    [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
    : > /etc/resolv.conf
    [ -n "$domain" ] && echo "search $domain" >> /etc/resolv.conf
    for server in $dns; do echo "nameserver $server" >> /etc/resolv.conf; done
    [ -n "$hostname" ] && hostname "$hostname"
    ;;
esac
exit 0
"""

INITTAB = """::sysinit:/etc/init.d/rcS
::askfirst:-/bin/sh
::ctrlaltdel:/sbin/reboot
::shutdown:/bin/sh -c 'killall dropbear acpid udhcpc 2>/dev/null; sync; umount -a -r 2>/dev/null'
::restart:/sbin/init
"""

# busybox acpid maps the power button (evdev KEY_POWER) to the action "PWRF/00000080".
ACPI_POWER_BUTTON = "#!/bin/sh\npoweroff\n"

PROFILE = 'export PATH=/sbin:/bin:/usr/sbin:/usr/bin\nPS1="\\u@\\h:\\w\\$ "\n'

# "*" rather than "!": dropbear refuses key logins to accounts it thinks are locked.
PASSWD = "root:*:0:0:root:/root:/bin/sh\n"
GROUP = "root:x:0:\ntty:x:5:\n"
SHELLS = "/bin/sh\n/bin/ash\n"
HOSTS = f"127.0.0.1\tlocalhost\n127.0.1.1\t{HOSTNAME}\n"
