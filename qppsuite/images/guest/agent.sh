# qppsuite channel agent: run by /init as the command (/etc/qppsuite/cmd) when the host uses the channel.
#
# The channel is the board's second PL011, /dev/ttyAMA1, made an 8-bit clean line (raw, no echo,
# RTS/CTS flow control, 1.5 Mbaud: the fastest its 24 MHz clock allows).  Each time it waits for
# work the agent says it is ready ("QPPSUITE-READY": the host may stop the machine there and save it,
# the ready snapshot at the first, a user's named snapshot after a script), then asks for one request
# with a "G" line (busybox's head -c reads ahead, so nothing may follow a request on the line until it
# is served).  qppsuite/channel.py answers each with a header line of four fields, "-" where one does
# not apply (PATH is the rest of the line), and its bytes:
#
#   F SIZE MODE PATH   SIZE bytes follow: the file PATH, with octal permissions MODE
#   B SIZE MODE PATH   the same, but the bytes come by hypercall: qpp-recv takes them (sent before as an F)
#   R SIZE - -         SIZE bytes follow: a shell script, run from /root with the console as its
#                      terminal; the agent answers "S STATUS"
#   O - - PATH         the agent answers "D SIZE PATH" and SIZE bytes (by hypercall, through qpp-send, sent
#                      before as an F), or "N - PATH" if it is no file
#   X - - -            the agent exits with the status of the last script, and /init powers off
#
# The user's script never sees the channel (fd 3 is closed
# for it), so it cannot swallow the host's next request.

export PATH="/usr/local/bin:$PATH"
line=/dev/ttyAMA1
exec 3<>"$line"
stty -F "$line" 1500000 raw -echo crtscts
status=0
mkdir -p /tmp/.qppsuite
while printf 'QPPSUITE-READY\n' >&3 && printf 'G\n' >&3 && read -r kind size mode path <&3; do
	case "$kind" in
	F)
		mkdir -p "$(dirname "$path")"
		head -c "$size" <&3 >"$path"
		chmod "$mode" "$path"
		;;
	B)
		mkdir -p "$(dirname "$path")"
		/tmp/.qppsuite/qpp-recv >"$path"
		chmod "$mode" "$path"
		;;
	R)
		head -c "$size" <&3 >/tmp/.qppsuite/script
		(cd /root && sh /tmp/.qppsuite/script 3<&-)
		status=$?
		printf 'S %d\n' "$status" >&3
		;;
	O)
		if [ -f "$path" ]; then
			printf 'D %d %s\n' "$(wc -c <"$path")" "$path" >&3
			/tmp/.qppsuite/qpp-send <"$path"
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
