# qppsuite channel agent: run by the guest's init (as /etc/qppsuite/agent) when the host uses the channel,
# with the toolkit's busybox applets first in its PATH.  QPPSUITE_PATH and QPPSUITE_SH are the PATH and
# the shell the user's scripts run with (the image's own /bin/sh); they are not passed on to them.
#
# The channel is the board's second PL011, /dev/ttyAMA1, made an 8-bit clean line (raw, no echo,
# RTS/CTS flow control, 1.5 Mbaud: the fastest its 24 MHz clock allows).  Each time it waits for
# work the agent says it is ready ("QPPSUITE-READY": the host may stop the machine there and save it,
# the ready snapshot at the first, a user's named snapshot after a script), then asks for one request
# with a "G" line (busybox's head -c reads ahead, so nothing may follow a request on the line until it
# is served).  qppsuite/channel.py answers each with a header line of four fields, "-" where one does
# not apply (PATH is the rest of the line), and its bytes:
#
#   F SIZE MODE PATH   SIZE bytes follow: the file PATH, with octal permissions MODE; the agent answers
#                      "W STATUS - PATH" (0: written; else nothing more is run, and X follows)
#   B SIZE MODE PATH   the same, but the bytes come by hypercall: qpp-recv takes them (sent before as an F)
#   R SIZE - -         SIZE bytes follow: a shell script, run from /root with the console as its
#                      terminal; the agent answers "S STATUS"
#   O - - PATH         the agent answers "D SIZE PATH" and SIZE bytes (by hypercall, through qpp-send, sent
#                      before as an F), or "N - PATH" if it is no regular file it can open.  SIZE is the
#                      file's size when the copy begins, and exactly SIZE bytes follow, cut or padded with
#                      zeros if the file changes meanwhile; a file of size 0 (/proc's) is read once, in at
#                      most 5 s of guest time, and that read is what comes back
#   X - - -            the agent exits with the status of the last script, and /init powers off
#
# The user's script never sees the channel (fd 3 is closed for it), so it cannot swallow the host's
# next request, and the bytes of a request are always read whole (receive), whatever becomes of them:
# a file that cannot be written never leaves its bytes on the line to be read as requests.

user_path=$QPPSUITE_PATH
user_sh=$QPPSUITE_SH
unset QPPSUITE_PATH QPPSUITE_SH
line=/dev/ttyAMA1
exec 3<>"$line"
stty -F "$line" 1500000 raw -echo crtscts
status=0
mkdir -p /tmp/.qppsuite

# receive SIZE PATH: SIZE bytes from the line into PATH, all of them read even if PATH cannot be written.
receive() {
	head -c "$1" <&3 | { cat >"$2" 2>/dev/null || { cat >/dev/null; false; }; }
}
while printf 'QPPSUITE-READY\n' >&3 && printf 'G\n' >&3 && read -r kind size mode path <&3; do
	case "$kind" in
	F | B)
		mkdir -p "$(dirname "$path")" 2>/dev/null
		if [ "$kind" = F ]; then
			receive "$size" "$path"
		else
			/tmp/.qppsuite/qpp-recv >"$path"
		fi && chmod "$mode" "$path"
		written=$?
		[ "$written" = 0 ] || status=1
		printf 'W %d - %s\n' "$written" "$path" >&3
		;;
	R)
		if receive "$size" /tmp/.qppsuite/script; then
			(cd /root && PATH=$user_path exec "$user_sh" /tmp/.qppsuite/script 3<&-)
			status=$?
		else
			echo "qppsuite: the guest has no room for the script in /tmp" >&2
			status=1
		fi
		printf 'S %d\n' "$status" >&3
		;;
	O)
		size=
		from=$path
		# a regular file that opens (sizing a device or a FIFO by reading it would never end)
		if [ -f "$path" ] && (: <"$path") 2>/dev/null; then  # in a subshell: a failed redirection of ":" ends a shell
			size=$(stat -c %s "$path" 2>/dev/null)
			if [ "$size" = 0 ]; then  # /proc: what one read gives, kept; one that never ends (kmsg) is refused
				from=/tmp/.qppsuite/read
				timeout 5 cat "$path" >"$from" 2>/dev/null && size=$(wc -c <"$from") || size=
			fi
		fi
		if [ -n "$size" ]; then
			printf 'D %d %s\n' "$size" "$path" >&3
			/tmp/.qppsuite/qpp-send <"$from"  # the host cuts or pads what it sends to SIZE
			rm -f /tmp/.qppsuite/read
		else
			printf 'N - %s\n' "$path" >&3
		fi
		;;
	X)
		exit "$status"
		;;
	esac
done
exit "$status"
