/* The DPDK surface braid binds. bindgen reads this file; shim.c implements
 * the braid_* functions for DPDK's static-inline fast path. */
#ifndef BRAID_DPDK_WRAPPER_H
#define BRAID_DPDK_WRAPPER_H

#include <rte_config.h>
#include <rte_common.h>
#include <rte_version.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_launch.h>
#include <rte_cycles.h>
#include <rte_malloc.h>
#include <rte_memory.h>
#include <rte_mempool.h>
#include <rte_mbuf.h>
#include <rte_ring.h>
#include <rte_ethdev.h>
#include <rte_eth_ring.h>
#include <rte_bus_vdev.h>
#include <rte_dev.h>
#include <rte_rcu_qsbr.h>
#include <rte_ip_frag.h>
#include <rte_gso.h>
#include <rte_ether.h>
#include <rte_ip.h>
#include <rte_udp.h>
#include <rte_tcp.h>
#include <rte_net.h>

#include "shim.h"

#endif
