/* braid's C shim: see shim.h. Each function is a one-line call of the
 * static-inline DPDK function of the same name, compiled with the flags
 * pkg-config gives for libdpdk so the inlined code matches the library. */
#include "shim.h"
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_cycles.h>
#include <rte_pause.h>
#include <rte_ip.h>

uint16_t braid_eth_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{ return rte_eth_rx_burst(port, queue, pkts, n); }
uint16_t braid_eth_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{ return rte_eth_tx_burst(port, queue, pkts, n); }
uint16_t braid_eth_tx_prepare(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{ return rte_eth_tx_prepare(port, queue, pkts, n); }

struct rte_mbuf *braid_pktmbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }
int braid_mempool_get_bulk(struct rte_mempool *mp, void **objs, unsigned int n)
{ return rte_mempool_get_bulk(mp, objs, n); }
void braid_mempool_put_bulk(struct rte_mempool *mp, void *const *objs, unsigned int n)
{ rte_mempool_put_bulk(mp, objs, n); }
void braid_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }
void braid_pktmbuf_reset(struct rte_mbuf *m) { rte_pktmbuf_reset(m); }
char *braid_pktmbuf_append(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_append(m, len); }
char *braid_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_prepend(m, len); }
char *braid_pktmbuf_adj(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_adj(m, len); }
int braid_pktmbuf_trim(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_trim(m, len); }
uint16_t braid_pktmbuf_headroom(const struct rte_mbuf *m) { return rte_pktmbuf_headroom(m); }
uint16_t braid_pktmbuf_tailroom(const struct rte_mbuf *m) { return rte_pktmbuf_tailroom(m); }
int braid_pktmbuf_is_contiguous(const struct rte_mbuf *m) { return rte_pktmbuf_is_contiguous(m); }
int braid_pktmbuf_chain(struct rte_mbuf *head, struct rte_mbuf *tail) { return rte_pktmbuf_chain(head, tail); }
unsigned int braid_mempool_avail_count(const struct rte_mempool *mp) { return rte_mempool_avail_count(mp); }
uint16_t braid_pktmbuf_data_room_size(struct rte_mempool *mp) { return rte_pktmbuf_data_room_size(mp); }
uint16_t braid_ipv6_phdr_cksum(const void *ipv6_hdr) { return rte_ipv6_phdr_cksum((const struct rte_ipv6_hdr *)ipv6_hdr, 0); }

int braid_rte_errno(void) { return rte_errno; }
unsigned int braid_lcore_id(void) { return rte_lcore_id(); }

unsigned int braid_ring_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned int n, unsigned int *free_space)
{ return rte_ring_enqueue_burst(r, objs, n, free_space); }
unsigned int braid_ring_dequeue_burst(struct rte_ring *r, void **objs, unsigned int n, unsigned int *available)
{ return rte_ring_dequeue_burst(r, objs, n, available); }
unsigned int braid_ring_count(const struct rte_ring *r) { return rte_ring_count(r); }

void braid_rcu_qsbr_quiescent(struct rte_rcu_qsbr *v, unsigned int thread_id)
{ rte_rcu_qsbr_quiescent(v, thread_id); }

uint64_t braid_rdtsc(void) { return rte_rdtsc(); }
void braid_pause(void) { rte_pause(); }
