# Shared by scripts/demo and scripts/e2e-control: the two-gateway lab in
# network namespaces. Source it after setting PREFIX (namespace and DPDK
# file-prefix stem), RUN (a private temp folder), TUNNELS and MODE.
#
#   host A (ns $PREFIX-a-<pid>, 10.1.0.2, fd00:1::2)
#     | veth
#   gateway A (ns $PREFIX-gwa-<pid>): braid-dataplane on net_af_packet vdevs
#     | WAN veth: $TUNNELS ESP-in-UDP tunnels (UDP 4500...), one bundle
#   gateway B (ns $PREFIX-gwb-<pid>): braid-dataplane
#     | veth
#   host B (ns $PREFIX-b-<pid>, 10.2.0.2, fd00:2::2)
#
# LAB_DYNAMIC_NEIGH=1 (the default): neither side has static neighbor
# entries: the gateways' LAN ports carry the gateway addresses (10.x.0.1,
# fd00:x::1), answer the hosts' ARP and neighbor solicitations, and find the
# hosts' MACs by ARP/ND themselves (no next_hop_mac).
# LAB_DYNAMIC_NEIGH=0: static entries, gateway ports without LAN addresses.
#
# DPDK always runs with --no-pci and --no-huge: vdevs only, the machine's
# NIC is never probed. lab_cleanup removes every process started through
# lab_spawn, the namespaces and the DPDK runtime folders, also on failure.

# This run's own names: two runs at once never share (nor delete) each
# other's namespaces.
NS_A=$PREFIX-a-$$ NS_GA=$PREFIX-gwa-$$ NS_GB=$PREFIX-gwb-$$ NS_B=$PREFIX-b-$$
GA_LAN=02:00:00:a0:00:01 GA_WAN=02:00:00:a0:01:01 HOST_A=02:00:00:0a:00:02
GB_LAN=02:00:00:b0:00:01 GB_WAN=02:00:00:b0:01:01 HOST_B=02:00:00:0b:00:02
PIDS=()

lab_cleanup() {
  # Runs to the end: a second Ctrl-C, a hang-up or a failing command here
  # must not leave namespaces and dataplanes behind.
  trap '' INT TERM HUP
  set +e
  # Only our children still running (a pid already waited for may belong
  # to another process by now).
  local live=" $(jobs -p | tr '\n' ' ') "
  for p in "${PIDS[@]}"; do
    [[ $live == *" $p "* ]] && kill -TERM "$p" 2>/dev/null
  done
  for p in "${PIDS[@]}"; do
    [[ $live == *" $p "* ]] || continue
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
  done
  for ns in $NS_A $NS_GA $NS_GB $NS_B; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill "$p" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
  done
  rm -rf "/var/run/dpdk/$PREFIX-ga-$$" "/var/run/dpdk/$PREFIX-gb-$$" "$RUN"
}

# Runs a command in the background and remembers its pid for lab_cleanup.
lab_spawn() { # out err cmd...
  local out=$1 err=$2; shift 2
  "$@" >"$out" 2>"$err" &
  PIDS+=($!)
}

lab_net() {
  for ns in $NS_A $NS_GA $NS_GB $NS_B; do ip netns add "$ns"; done
  ip link add a0 netns $NS_A address $HOST_A type veth peer name alan netns $NS_GA
  ip link add wana netns $NS_GA type veth peer name wanb netns $NS_GB
  ip link add b0 netns $NS_B address $HOST_B type veth peer name blan netns $NS_GB
  local x
  for x in "$NS_A a0" "$NS_A lo" "$NS_GA alan" "$NS_GA wana" "$NS_GB wanb" "$NS_GB blan" "$NS_B b0" "$NS_B lo"; do
    set -- $x; ip -n "$1" link set "$2" up
  done
  if [ "$MODE" = plain ]; then
    # Plain ESP carries one inner packet per outer packet; without
    # outer_fragmentation braid cuts what does not fit (TCP segments, IPv4
    # inner fragments) or drops it: the hosts' MTU leaves room for
    # ESP-in-UDP, so nothing needs cutting.
    ip -n $NS_A link set a0 mtu 1400; ip -n $NS_B link set b0 mtu 1400
  fi
  lab_host $NS_A a0 10.1.0.2 fd00:1::2 10.1.0.1 fd00:1::1 $GA_LAN 10.2.0.0/16 fd00:2::/64
  lab_host $NS_B b0 10.2.0.2 fd00:2::2 10.2.0.1 fd00:2::1 $GB_LAN 10.1.0.0/16 fd00:1::/64
  # Keys: fresh random AES-256 keys and salts, one per tunnel and direction.
  declare -g -a KAB KBA SAB SBA
  local t
  for t in $(seq 0 $((TUNNELS-1))); do KAB[$t]=$(lab_rnd 32); KBA[$t]=$(lab_rnd 32); SAB[$t]=$(lab_rnd 4); SBA[$t]=$(lab_rnd 4); done
}

lab_host() { # ns dev v4 v6 gw4 gw6 gwmac remote4 remote6
  ip -n "$1" addr add "$3/24" dev "$2"
  ip -n "$1" addr add "$4/64" dev "$2" nodad
  ip -n "$1" route add "$8" via "$5"
  ip -n "$1" -6 route add "$9" via "$6"
  if [ "${LAB_DYNAMIC_NEIGH:-1}" != 1 ]; then
    ip -n "$1" neigh add "$5" lladdr "$7" dev "$2" nud permanent
    ip -n "$1" -6 neigh add "$6" lladdr "$7" dev "$2" nud permanent
  fi
  # veth leaves checksums to "hardware"; af_packet would capture them
  # unfinished. The hosts compute them (and so do not use TSO).
  ip netns exec "$1" ethtool -K "$2" tx off >/dev/null
}

lab_rnd() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

# A gateway's configuration document. WEIGHTS (space-separated, one per
# tunnel, default all 1), RATES_MBPS (each tunnel's `rate_mbps`, default
# 0), POLICY (default weighted) and EXTRA_ROUTES (JSON route objects,
# comma-led) change it.
lab_conf() { # side(a|b)
  local side=$1 tunnels="" sep="" t w
  local -a weights=(${WEIGHTS:-}) mbps=(${RATES_MBPS:-})
  for t in $(seq 0 $((TUNNELS-1))); do
    local so si ko ki xo xi
    if [ "$side" = a ]; then so=$((4096+t)) si=$((8192+t)) ko=${KAB[$t]} ki=${KBA[$t]} xo=${SAB[$t]} xi=${SBA[$t]}
    else so=$((8192+t)) si=$((4096+t)) ko=${KBA[$t]} ki=${KAB[$t]} xo=${SBA[$t]} xi=${SAB[$t]}; fi
    w=${weights[$t]:-1}
    local me=192.0.2.1 them=192.0.2.2
    [ "$side" = b ] && { me=192.0.2.2; them=192.0.2.1; }
    tunnels+="$sep{\"wan_port\":\"wan\",\"local\":\"$me:$((4500+t))\",\"remote\":\"$them:$((4500+t))\",\"spi_out\":$so,\"spi_in\":$si,\"key_out\":\"$ko\",\"key_in\":\"$ki\",\"salt_out\":\"$xo\",\"salt_in\":\"$xi\",\"weight\":$w,\"rate_mbps\":${mbps[$t]:-0}}"
    sep=","
  done
  local lanmac hostmac wanmac peermac me r4 r6 lanaddr=""
  if [ "$side" = a ]; then lanmac=$GA_LAN hostmac=$HOST_A wanmac=$GA_WAN peermac=$GB_WAN me=192.0.2.1 r4=10.2.0.0/16 r6=fd00:2::/64
  else lanmac=$GB_LAN hostmac=$HOST_B wanmac=$GB_WAN peermac=$GA_WAN me=192.0.2.2 r4=10.1.0.0/16 r6=fd00:1::/64; fi
  if [ "${LAB_DYNAMIC_NEIGH:-1}" = 1 ]; then
    local n=1; [ "$side" = b ] && n=2
    lanaddr="\"ipv4\":\"10.$n.0.1/24\",\"ipv6\":\"fd00:$n::1/64\","
  else
    lanaddr="\"next_hop_mac\":\"$hostmac\","
  fi
  # With LAB_WORKERS > 1 the two gateways' polling workers, iperf3 and the
  # kernel share this box's 2 vCPUs, so a worker can lose its CPU for a
  # scheduler time slice with ESP frames in hand (seen here: 18 of 30,000
  # datagrams came after a 3 ms re-order hold gave up on them,
  # `reorder_too_late`). A hold of at least 30 ms covers that; on a
  # gateway whose workers own their cores the defaults (1 ms, plus 2 ms
  # over the paths' measured skew) do.
  local topts=""
  [ "${LAB_WORKERS:-1}" -gt 1 ] && topts=',"tunnel":{"reorder_hold_min_ms":30}'
  cat <<JSON
{"ports":[
  {"name":"lan","device":"net_af_packet0","role":"lan","mac":"$lanmac",$lanaddr"mtu":1500},
  {"name":"wan","device":"net_af_packet1","role":"wan","mac":"$wanmac","ipv4":"$me/24","next_hop_mac":"$peermac","mtu":1500}],
 "peers":[{"name":"peer","bundle":"wide"}],
 "bundles":[{"name":"wide","mode":"$MODE","policy":"${POLICY:-weighted}","tunnels":[$tunnels]}],
 "routes":[{"prefix":"$r4","peer":"peer"},{"prefix":"$r6","peer":"peer"}${EXTRA_ROUTES:-}]$topts}
JSON
}

# Starts a gateway: braid-dataplane in its namespace on two af_packet vdevs.
# LAB_WORKERS=N (default 1): N workers on lcores 0..N-1 (both gateways
# then share the cores), one af_packet queue pair each: the kernel spreads
# frames over the queues by flow hash (PACKET_FANOUT_HASH).
lab_gateway() { # ns name lcore lan wan dataplane-options...
  local ns=$1 name=$2 lcore=$3 lan=$4 wan=$5 workers=${LAB_WORKERS:-1}; shift 5
  if [ "$workers" -gt 1 ]; then
    lcore="0-$((workers - 1))"
    set -- "$@" --workers "$workers"
  fi
  lab_spawn "$RUN/$name.out" "$RUN/$name.err" ip netns exec "$ns" "$DP" "$@" -- \
    --no-pci --no-huge -m 512 -l "$lcore" --file-prefix "$PREFIX-$name-$$" --log-level='*:warning' \
    --vdev="net_af_packet0,iface=$lan,qpairs=$workers,framecnt=4096" --vdev="net_af_packet1,iface=$wan,qpairs=$workers,framecnt=4096${LAB_WAN_VDEV_ARGS:-}"
}

# Waits until a gateway's stderr says it runs.
lab_wait_running() { # name [seconds]
  local i
  for i in $(seq $((${2:-10} * 10))); do grep -q "braid-dataplane: running" "$RUN/$1.err" 2>/dev/null && return 0; sleep 0.1; done
  cat "$RUN/$1.err"; echo "gateway $1 did not start"; return 1
}

# Makes every tunnel narrow: on both gateways' WAN veths (egress, so each
# direction), one HTB class per tunnel (UDP destination port 4500+t) at
# RATE (tc units, e.g. 20mbit), or tunnel t at the t-th of NARROW_RATES
# (space-separated), with a 64-packet FIFO, as a network that polices each
# UDP flow would. Other frames are not shaped.
lab_narrow() { # uses RATE, NARROW_RATES
  local ns dev t x r
  local -a rates=(${NARROW_RATES:-})
  for x in "$NS_GA wana" "$NS_GB wanb"; do
    set -- $x; ns=$1 dev=$2
    tc -n "$ns" qdisc replace dev "$dev" root handle 1: htb default 999 r2q 100
    for t in $(seq 0 $((TUNNELS-1))); do
      r=${rates[$t]:-$RATE}
      tc -n "$ns" class add dev "$dev" parent 1: classid "1:$((10+t))" htb rate "$r" ceil "$r"
      tc -n "$ns" qdisc add dev "$dev" parent "1:$((10+t))" handle "$((10+t)):" pfifo limit 64
      tc -n "$ns" filter add dev "$dev" parent 1: protocol ip prio 1 u32 match ip dport $((4500+t)) 0xffff flowid "1:$((10+t))"
    done
  done
}

# Bytes each tunnel's class sent on a gateway's WAN veth, one line per
# tunnel: "<tunnel> <bytes> <dropped>".
lab_narrow_bytes() { # ns dev
  tc -n "$1" -s class show dev "$2" | awk '/^class htb 1:/{split($3,c,":"); t=c[2]-10} /Sent/{if (t>=0) print t, $2, $7+0; t=-1}' | tr -d ','
}

# Waits (up to 5 s) until something listens on TCP PORT in namespace NS.
lab_wait_listen() { # ns port
  for _ in $(seq 50); do ip netns exec "$1" ss -ltn 2>/dev/null | grep -q ":$2 " && return 0; sleep 0.1; done
  echo "nothing listens on TCP $2 in $1"; return 1
}
