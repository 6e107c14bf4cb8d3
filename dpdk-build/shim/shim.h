/* braid's C shim: real symbols for DPDK's static-inline fast path, and the
 * macro constants bindgen cannot evaluate (RTE_BIT64 and friends). */
#ifndef BRAID_DPDK_SHIM_H
#define BRAID_DPDK_SHIM_H

#include <stdint.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_ring.h>
#include <rte_rcu_qsbr.h>

/* ethdev burst API */
uint16_t braid_eth_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t braid_eth_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t braid_eth_tx_prepare(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);

/* mbuf */
struct rte_mbuf *braid_pktmbuf_alloc(struct rte_mempool *mp);
int braid_mempool_get_bulk(struct rte_mempool *mp, void **objs, unsigned int n);
void braid_mempool_put_bulk(struct rte_mempool *mp, void *const *objs, unsigned int n);
void braid_pktmbuf_free(struct rte_mbuf *m);
void braid_pktmbuf_reset(struct rte_mbuf *m);
char *braid_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
char *braid_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len);
char *braid_pktmbuf_adj(struct rte_mbuf *m, uint16_t len);
int braid_pktmbuf_trim(struct rte_mbuf *m, uint16_t len);
uint16_t braid_pktmbuf_headroom(const struct rte_mbuf *m);
uint16_t braid_pktmbuf_tailroom(const struct rte_mbuf *m);
int braid_pktmbuf_is_contiguous(const struct rte_mbuf *m);
int braid_pktmbuf_chain(struct rte_mbuf *head, struct rte_mbuf *tail);
unsigned int braid_mempool_avail_count(const struct rte_mempool *mp);
uint16_t braid_pktmbuf_data_room_size(struct rte_mempool *mp);
uint16_t braid_ipv6_phdr_cksum(const void *ipv6_hdr);

/* per-lcore state */
int braid_rte_errno(void);
unsigned int braid_lcore_id(void);

/* rings */
unsigned int braid_ring_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned int n, unsigned int *free_space);
unsigned int braid_ring_dequeue_burst(struct rte_ring *r, void **objs, unsigned int n, unsigned int *available);
unsigned int braid_ring_count(const struct rte_ring *r);

/* rcu */
void braid_rcu_qsbr_quiescent(struct rte_rcu_qsbr *v, unsigned int thread_id);

/* time */
uint64_t braid_rdtsc(void);
void braid_pause(void);

/* Macro constants bindgen cannot see (RTE_BIT64 expressions). clang
 * evaluates enumerators, so they reach Rust with their real values. */
enum braid_consts {
	BRAID_RX_OFFLOAD_IPV4_CKSUM = RTE_ETH_RX_OFFLOAD_IPV4_CKSUM,
	BRAID_RX_OFFLOAD_UDP_CKSUM = RTE_ETH_RX_OFFLOAD_UDP_CKSUM,
	BRAID_RX_OFFLOAD_TCP_CKSUM = RTE_ETH_RX_OFFLOAD_TCP_CKSUM,
	BRAID_RX_OFFLOAD_TCP_LRO = RTE_ETH_RX_OFFLOAD_TCP_LRO,
	BRAID_RX_OFFLOAD_SCATTER = RTE_ETH_RX_OFFLOAD_SCATTER,
	BRAID_RX_OFFLOAD_RSS_HASH = RTE_ETH_RX_OFFLOAD_RSS_HASH,
	BRAID_RX_OFFLOAD_VLAN_STRIP = RTE_ETH_RX_OFFLOAD_VLAN_STRIP,
	BRAID_TX_OFFLOAD_IPV4_CKSUM = RTE_ETH_TX_OFFLOAD_IPV4_CKSUM,
	BRAID_TX_OFFLOAD_UDP_CKSUM = RTE_ETH_TX_OFFLOAD_UDP_CKSUM,
	BRAID_TX_OFFLOAD_TCP_CKSUM = RTE_ETH_TX_OFFLOAD_TCP_CKSUM,
	BRAID_TX_OFFLOAD_TCP_TSO = RTE_ETH_TX_OFFLOAD_TCP_TSO,
	BRAID_TX_OFFLOAD_UDP_TSO = RTE_ETH_TX_OFFLOAD_UDP_TSO,
	BRAID_TX_OFFLOAD_MULTI_SEGS = RTE_ETH_TX_OFFLOAD_MULTI_SEGS,
	BRAID_TX_OFFLOAD_MBUF_FAST_FREE = RTE_ETH_TX_OFFLOAD_MBUF_FAST_FREE,
	BRAID_TX_OFFLOAD_OUTER_IPV4_CKSUM = RTE_ETH_TX_OFFLOAD_OUTER_IPV4_CKSUM,
	BRAID_TX_OFFLOAD_OUTER_UDP_CKSUM = RTE_ETH_TX_OFFLOAD_OUTER_UDP_CKSUM,
	BRAID_MBUF_F_TX_IPV4 = RTE_MBUF_F_TX_IPV4,
	BRAID_MBUF_F_TX_IPV6 = RTE_MBUF_F_TX_IPV6,
	BRAID_MBUF_F_TX_IP_CKSUM = RTE_MBUF_F_TX_IP_CKSUM,
	BRAID_MBUF_F_TX_UDP_CKSUM = RTE_MBUF_F_TX_UDP_CKSUM,
	BRAID_MBUF_F_TX_TCP_CKSUM = RTE_MBUF_F_TX_TCP_CKSUM,
	BRAID_MBUF_F_TX_TCP_SEG = RTE_MBUF_F_TX_TCP_SEG,
	BRAID_MBUF_F_TX_UDP_SEG = RTE_MBUF_F_TX_UDP_SEG,
	BRAID_MBUF_F_TX_OFFLOAD_MASK = RTE_MBUF_F_TX_OFFLOAD_MASK,
	BRAID_MBUF_F_EXTERNAL = RTE_MBUF_F_EXTERNAL,
	BRAID_MBUF_F_INDIRECT = RTE_MBUF_F_INDIRECT,
	BRAID_MBUF_F_RX_IP_CKSUM_BAD = RTE_MBUF_F_RX_IP_CKSUM_BAD,
	BRAID_MBUF_F_RX_IP_CKSUM_GOOD = RTE_MBUF_F_RX_IP_CKSUM_GOOD,
	BRAID_MBUF_F_RX_L4_CKSUM_BAD = RTE_MBUF_F_RX_L4_CKSUM_BAD,
	BRAID_MBUF_F_RX_L4_CKSUM_GOOD = RTE_MBUF_F_RX_L4_CKSUM_GOOD,
	BRAID_MBUF_F_RX_RSS_HASH = RTE_MBUF_F_RX_RSS_HASH,
	BRAID_ETH_RSS_IP = RTE_ETH_RSS_IP,
	BRAID_ETH_RSS_UDP = RTE_ETH_RSS_UDP,
	BRAID_ETH_RSS_TCP = RTE_ETH_RSS_TCP,
	BRAID_ETH_RSS_IPV4 = RTE_ETH_RSS_IPV4,
	BRAID_ETH_RSS_NONFRAG_IPV4_UDP = RTE_ETH_RSS_NONFRAG_IPV4_UDP,
	BRAID_ETH_RSS_IPV6 = RTE_ETH_RSS_IPV6,
	BRAID_ETH_RSS_NONFRAG_IPV6_UDP = RTE_ETH_RSS_NONFRAG_IPV6_UDP,
	BRAID_PKTMBUF_HEADROOM = RTE_PKTMBUF_HEADROOM,
	BRAID_MBUF_DEFAULT_BUF_SIZE = RTE_MBUF_DEFAULT_BUF_SIZE,
	BRAID_MAX_LCORE = RTE_MAX_LCORE,
	BRAID_MAX_ETHPORTS = RTE_MAX_ETHPORTS,
	BRAID_ETH_NAME_MAX_LEN = RTE_ETH_NAME_MAX_LEN,
	BRAID_RING_F_SP_ENQ = RING_F_SP_ENQ,
	BRAID_RING_F_SC_DEQ = RING_F_SC_DEQ,
	BRAID_LCORE_ID_ANY = LCORE_ID_ANY,
};

#endif
