#!/bin/bash
# Make the Libreswan pluto debug log(s) + capture in this directory from two REAL pluto peers.
#
# Debian 12's libreswan package conflicts with strongswan-charon (which the project's tests need),
# so the .deb and the libraries it needs are unpacked into a private directory (LSW_ROOT) and pluto
# is run from there; nothing is installed system-wide.
#
# Two plutos run in two network namespaces joined by a veth (198.18.1.1 <-> 198.18.1.2 only),
# each with its own config, NSS database, secrets and run directory. plutodebug="base crypt private"
# makes pluto print the derived IKE and CHILD SA keys. This kernel has no ESP xfrm support, so
# pluto cannot install the CHILD SAs; the IKE exchange (and the logged keys) happen before that.
#
# Usage: sudo bash make_libreswan_sample.sh [SCENARIO...]   (default: all scenarios)
# Needs: root, iproute2, tcpdump, apt-get (for `apt-get download`). Cleans up after itself.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
LSW_ROOT=${LSW_ROOT:-/tmp/lsw/root}
WORK=$(mktemp -d /tmp/lsw-sample.XXXXXX)
NS_I=lswsample-i
NS_R=lswsample-r
IP_I=198.18.1.1
IP_R=198.18.1.2
PIDS=()

cleanup() {
    set +e
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    sleep 0.5
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    ip netns del "$NS_I" 2>/dev/null
    ip netns del "$NS_R" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

fetch_libreswan() {
    [ -x "$LSW_ROOT/usr/libexec/ipsec/pluto" ] && return
    local debs
    debs=$(mktemp -d /tmp/lsw-debs.XXXXXX)
    (cd "$debs" && apt-get download libreswan libnss3-tools libldns3 libevent-pthreads-2.1-7 \
        libevent-core-2.1-7 libcurl3-nss libunbound8)
    for f in "$debs"/*.deb; do dpkg -x "$f" "$LSW_ROOT"; done
    rm -rf "$debs"
}

fetch_libreswan
export LD_LIBRARY_PATH="$LSW_ROOT/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
PLUTO="$LSW_ROOT/usr/libexec/ipsec/pluto"
WHACK="$LSW_ROOT/usr/libexec/ipsec/whack"
CERTUTIL="$LSW_ROOT/usr/bin/certutil"
PSK="ipsecscope-libreswan-sample-psk"

# scenario name -> "ike= esp= ikev2="
declare -A SCEN
SCEN[ikev2_gcm]="aes_gcm256-sha2_256-modp2048|aes_gcm256|yes"
SCEN[ikev2_cbc]="aes256-sha2_256-modp2048|aes256-sha2_256|yes"
SCEN[ikev2_rekey]="aes_gcm256-sha2_256-modp2048|aes_gcm256|yes"
SCEN[ikev1_cbc]="aes256-sha2_256-modp2048|aes256-sha2_256|no"
ORDER=(ikev2_gcm ikev2_cbc ikev2_rekey ikev1_cbc ikev2_charon)
[ $# -gt 0 ] && ORDER=("$@")

setup_ns() {
    ip netns add "$NS_I"
    ip netns add "$NS_R"
    ip link add lswveth0 netns "$NS_I" type veth peer name lswveth1 netns "$NS_R"
    ip -n "$NS_I" link set lo up
    ip -n "$NS_R" link set lo up
    ip -n "$NS_I" link set lswveth0 name veth0
    ip -n "$NS_R" link set lswveth1 name veth0
    ip -n "$NS_I" addr add "$IP_I/24" dev veth0
    ip -n "$NS_R" addr add "$IP_R/24" dev veth0
    ip -n "$NS_I" link set veth0 up
    ip -n "$NS_R" link set veth0 up
}

peer_dir() {  # name ike esp ikev2 me peer
    local d="$WORK/$1"
    mkdir -p "$d/nss" "$d/run" "$d/ipsec.d"
    "$CERTUTIL" -N -d "sql:$d/nss" --empty-password
    cat > "$d/ipsec.conf" <<CONF
config setup
	plutodebug="base crypt private"
	ikev1-policy=accept

conn sample
	left=$5
	right=$6
	authby=secret
	ikev2=$4
	ike=$2
	esp=$3
	type=tunnel
	leftsubnet=${7:-$5/32}
	rightsubnet=${8:-$6/32}
	auto=add
CONF
    printf '%s %s : PSK "%s"\n' "$5" "$6" "$PSK" > "$d/ipsec.secrets"
    chmod 600 "$d/ipsec.secrets"
}

start_pluto() {  # ns name
    local d="$WORK/$2"
    # pluto runs /usr/libexec/ipsec/addconn (a compiled-in path) to load its config: bind the
    # unpacked libexec over /usr/libexec inside the private mount namespace that `ip netns exec`
    # gives the command (slave propagation, so the host never sees the bind).
    ip netns exec "$1" sh -c 'mount --bind "$0" /usr/libexec && exec "$@"' "$LSW_ROOT/usr/libexec" \
        "$PLUTO" --nofork --stderrlog --log-no-time --config "$d/ipsec.conf" \
        --secretsfile "$d/ipsec.secrets" --nssdir "$d/nss" --rundir "$d/run" \
        --ipsecdir "$d/ipsec.d" --no-dnssec --nhelpers 0 \
        >"$d/pluto.log" 2>&1 &
    PIDS+=($!)
}

# ikev2_charon: pluto initiates to a strongSwan charon responder (kernel-libipsec: ESP in user
# space, so charon installs its CHILD SA and answers IKE_AUTH with it). pluto then derives the
# CHILD SA keys, dumps the outbound one and fails to install it. charon's own log (ike 4, chd 4,
# mgr 2) is an independent record of the same keys.
run_charon_scenario() {
    local name=ikev2_charon cdir="$WORK/charon"
    setup_ns
    ip -n "$NS_I" addr add 10.1.0.1/32 dev lo
    ip -n "$NS_R" addr add 10.2.0.1/32 dev lo
    peer_dir init "aes_gcm256-sha2_256-modp2048" "aes_gcm256" yes "$IP_I" "$IP_R" 10.1.0.1/32 10.2.0.1/32
    mkdir -p "$cdir/run"
    cat >"$cdir/strongswan.conf" <<CONF
charon {
    load_modular = no
    load = random nonce openssl pem pkcs1 x509 pubkey aes sha1 sha2 hmac gcm kdf kernel-libipsec kernel-netlink socket-default vici updown
    install_virtual_ip = no
    plugins {
        vici {
            socket = unix://$cdir/run/charon.vici
        }
    }
    filelog {
        charon {
            path = $cdir/charon.log
            append = no
            flush_line = yes
            time_format = %Y-%m-%dT%H:%M:%S
            time_add_ms = yes
            ike_name = yes
            default = 1
            ike = 4
            chd = 4
            mgr = 2
            knl = 2
            cfg = 1
        }
    }
}
CONF
    printf 'swanctl {\n    load = random openssl pem pkcs1 x509 pubkey\n}\n' >"$cdir/swanctl-strongswan.conf"
    cat >"$cdir/swanctl.conf" <<CONF
connections {
    lsw {
        version = 2
        local_addrs = $IP_R
        remote_addrs = $IP_I
        proposals = aes256gcm16-prfsha256-modp2048
        encap = yes
        local {
            auth = psk
            id = $IP_R
        }
        remote {
            auth = psk
            id = $IP_I
        }
        children {
            lsw {
                local_ts = 10.2.0.1/32
                remote_ts = 10.1.0.1/32
                esp_proposals = aes256gcm16-noesn  # kernel-libipsec has no ESN
            }
        }
    }
}
secrets {
    ike-lsw {
        id-1 = $IP_I
        id-2 = $IP_R
        secret = "$PSK"
    }
}
CONF
    ip netns exec "$NS_I" tcpdump -i veth0 -s 0 -U -w "$WORK/$name.pcap" udp >/dev/null 2>&1 &
    PIDS+=($!)
    sleep 1
    # charon hard-codes its pid file under /run: give it its own /run (private mount namespace).
    STRONGSWAN_CONF="$cdir/strongswan.conf" ip netns exec "$NS_R" sh -c \
        'mount --bind "$0" /run && exec /usr/lib/ipsec/charon' "$cdir/run" >"$cdir/charon.stderr" 2>&1 &
    PIDS+=($!)
    local swanctl=(env STRONGSWAN_CONF="$cdir/swanctl-strongswan.conf" swanctl)
    local uri=(--uri "unix://$cdir/run/charon.vici")
    for _ in $(seq 100); do "${swanctl[@]}" --stats "${uri[@]}" >/dev/null 2>&1 && break; sleep 0.1; done
    "${swanctl[@]}" --load-all "${uri[@]}" --file "$cdir/swanctl.conf"
    start_pluto "$NS_I" init
    for _ in $(seq 50); do [ -S "$WORK/init/run/pluto.ctl" ] && break; sleep 0.1; done
    "$WHACK" --ctlsocket "$WORK/init/run/pluto.ctl" --listen >/dev/null || true
    sleep 1
    timeout 20 "$WHACK" --ctlsocket "$WORK/init/run/pluto.ctl" --name sample --initiate || true
    sleep 3
    "${swanctl[@]}" --list-sas "${uri[@]}" || true
    "$WHACK" --ctlsocket "$WORK/init/run/pluto.ctl" --shutdown || true
    sleep 1
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
    gzip -9n <"$WORK/init/pluto.log" >"$HERE/$name.initiator.log.gz"
    gzip -9n <"$cdir/charon.log" >"$HERE/$name.charon.log.gz"
    cp "$WORK/$name.pcap" "$HERE/$name.pcap"
    ip netns del "$NS_I"
    ip netns del "$NS_R"
    rm -rf "${WORK:?}/init" "$cdir"
}

for name in "${ORDER[@]}"; do
    if [ "$name" = ikev2_charon ]; then
        run_charon_scenario
        continue
    fi
    IFS='|' read -r IKE ESP V2 <<<"${SCEN[$name]}"
    setup_ns
    peer_dir init "$IKE" "$ESP" "$V2" "$IP_I" "$IP_R"
    peer_dir resp "$IKE" "$ESP" "$V2" "$IP_R" "$IP_I"
    ip netns exec "$NS_I" tcpdump -i veth0 -s 0 -U -w "$WORK/$name.pcap" udp >/dev/null 2>&1 &
    PIDS+=($!)
    sleep 1
    start_pluto "$NS_R" resp
    start_pluto "$NS_I" init
    for d in init resp; do
        for _ in $(seq 50); do [ -S "$WORK/$d/run/pluto.ctl" ] && break; sleep 0.1; done
    done
    "$WHACK" --ctlsocket "$WORK/resp/run/pluto.ctl" --listen >/dev/null || true
    "$WHACK" --ctlsocket "$WORK/init/run/pluto.ctl" --listen >/dev/null || true
    sleep 1
    timeout 20 "$WHACK" --ctlsocket "$WORK/init/run/pluto.ctl" --name sample --initiate || true
    sleep 1
    if [ "$name" = ikev2_rekey ]; then
        # rekey the IKE SA (CREATE_CHILD_SA): a second set of IKE keys under new SPIs
        timeout 20 "$WHACK" --ctlsocket "$WORK/init/run/pluto.ctl" --name sample --rekey-ike || true
        sleep 1
    fi
    sleep 2
    "$WHACK" --ctlsocket "$WORK/init/run/pluto.ctl" --shutdown || true
    "$WHACK" --ctlsocket "$WORK/resp/run/pluto.ctl" --shutdown || true
    sleep 1
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
    # The logs are kept whole (pluto's start-up self-tests included, as a user's log would be),
    # gzip'd: ipsecscope reads .gz key files transparently.
    gzip -9n <"$WORK/init/pluto.log" >"$HERE/$name.initiator.log.gz"
    gzip -9n <"$WORK/resp/pluto.log" >"$HERE/$name.responder.log.gz"
    cp "$WORK/$name.pcap" "$HERE/$name.pcap"
    ip netns del "$NS_I"
    ip netns del "$NS_R"
    rm -rf "${WORK:?}/init" "${WORK:?}/resp"
done
echo "wrote: $(cd "$HERE" && ls ./*.log.gz ./*.pcap | tr '\n' ' ')"
