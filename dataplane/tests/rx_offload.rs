//! The NIC's RX checksum verdict on the outer IPv4 header is used: a frame
//! the NIC marked good is not summed again, one it marked bad is dropped,
//! one it did not check is checked in software. net_ring keeps the mbufs'
//! flags, so the test sets them as a PMD with checksum offload would.

use braid_dataplane::counters::DpDrop;
use braid_dataplane::lab::traffic::{ip_packet, Family, Flow, L4};
use braid_dataplane::lab::{self, Lab};
use braid_dpdk::mbuf::RxCksum;
use braid_dpdk::Mbuf;

#[test]
fn the_nics_outer_checksum_verdict_is_used() {
    let (_eal, _g) = braid_dpdk::testing::eal(&[], 1536);
    let mut lab = Lab::new("rxck", "plain", &[1], 16, 1500);
    // Capture A's ESP packets; the middle loses them (tunnel port 4500).
    lab.capture = Some(Vec::new());
    lab.capture_limit = 16;
    lab.drop_ports.insert(4500);
    let flow = Flow::a_to_b(1, Family::V4, L4::Udp);
    let mut v: Vec<Mbuf> = (0..4).map(|s| lab.frame_to_a(&ip_packet(&flow, s, 200))).collect();
    lab.gen.tx.tx_all(&mut v, 100);
    lab.settle(5);
    let cap: Vec<Vec<u8>> = lab.capture.take().unwrap().into_iter().filter(|f| f.len() > 200).collect();
    assert_eq!(cap.len(), 4, "A's four ESP packets");
    lab.drop_ports.clear();
    let corrupt = |f: &[u8]| {
        let mut f = f.to_vec();
        f[24] ^= 0x55; // the outer IPv4 header checksum
        f
    };
    let frames = [
        (corrupt(&cap[0]), RxCksum::Good),    // trusted: the NIC checked it
        (cap[1].clone(), RxCksum::Bad),       // dropped on the NIC's word
        (corrupt(&cap[2]), RxCksum::Unknown), // summed in software: dropped
        (cap[3].clone(), RxCksum::Unknown),   // summed in software: good
    ];
    let mut v: Vec<Mbuf> = frames
        .iter()
        .map(|(f, verdict)| {
            let mut m = lab.raw(f);
            m.set_rx_ip_cksum(*verdict);
            assert_eq!(m.rx_ip_cksum(), *verdict);
            m
        })
        .collect();
    lab.mid_b.tx.tx_all(&mut v, 100);
    lab.settle(5);
    let seqs: Vec<u32> = lab.delivered.iter().filter_map(|f| braid_dataplane::lab::traffic::tag(&f[14..]).map(|t| t.1)).collect();
    assert_eq!(seqs, vec![0, 3], "the NIC-approved one and the software-checked good one");
    let (a, b) = lab.counters();
    assert_eq!(b.drops.get(DpDrop::BadOuterIp), 2, "the NIC's bad one and the software's");
    lab::assert_conserved(&a, "A", true);
    lab::assert_conserved(&b, "B", true);
    lab.close();
}
