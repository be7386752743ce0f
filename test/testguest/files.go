package testguest

import "github.com/hutch-vm/hutch/internal/guest"

// initScript is the guest's PID 1. It prints each step on the console so a
// failed boot in a test log says where it stopped.
const initScript = `#!/bin/sh
export PATH=/bin HOME=/root
say() { echo "hutch-guest: $*"; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
say "kernel $(uname -r), up $(cut -d' ' -f1 /proc/uptime)s"

# From here on only emergencies reach the console: it is also the shell that
# tests type into, and kernel chatter would interleave with it.
dmesg -n 1

say "loading modules"
while read -r m; do
	insmod "$m" || say "insmod $m failed"
done </etc/modules.order

hostname guest
ip link set lo up
if [ -e /sys/class/net/eth0 ]; then
	ip link set eth0 up
	if udhcpc -i eth0 -s /etc/udhcpc.sh -q -n -t 5 -T 1 >/dev/null 2>&1; then
		say "eth0 $(ip -4 -o addr show dev eth0 | awk '{print $4}')"
	else
		say "eth0: no DHCP lease"
	fi
else
	say "no eth0"
fi

httpd -p 80 -h /www && say "http on port 80"
# -ll keeps listening and forks per connection. busybox has no UDP
# server, so UDP echo is a small static program of the test's own.
nc -ll -p 7 -e cat </dev/null >/dev/null 2>&1 &
udpecho </dev/null >/dev/null 2>&1 &
say "tcp and udp echo on port 7"

say "up $(cut -d' ' -f1 /proc/uptime)s"
echo ` + Marker + `

case " $(cat /proc/cmdline) " in
*" ` + PoweroffArg + ` "*)
	say "powering off"
	poweroff -f
	;;
esac

# The serial line reports no size, so the line editor would assume 80
# columns and wrap long typed commands with CRs in the middle of the echo,
# which makes matching a command in the output unreliable.
stty cols 500 rows 50 2>/dev/null
export PS1='` + Prompt + `'
while :; do
	# cttyhack finds the real console device behind /dev/console and makes
	# it the shell's controlling tty, so ^C and job control work.
	setsid cttyhack sh || sleep 1
done
`

// guestFiles returns every file the initramfs gets besides busybox and
// the modules, keyed by path; "init" is the init script.
func guestFiles() map[string][]byte {
	return map[string][]byte{
		"init":           []byte(initScript),
		"etc/udhcpc.sh":  []byte(guest.UdhcpcScript),
		"www/index.html": []byte(PageText + "\n"),
		"etc/hosts":      []byte("127.0.0.1 localhost\n127.0.1.1 guest\n"),
		"etc/passwd":     []byte("root:x:0:0:root:/root:/bin/sh\n"),
		"etc/group":      []byte("root:x:0:\n"),
	}
}
