//! Finds DPDK 22.11 with pkg-config, runs bindgen over `shim/wrapper.h`, and
//! compiles `shim/shim.c` with the same cflags. Fails with a message naming the
//! Debian package to install when something is missing.

use std::env;
use std::path::PathBuf;

const DPDK_MIN: &str = "22.11";

fn die(msg: &str) -> ! {
    eprintln!("\nerror: {msg}\n");
    panic!("{msg}");
}

fn main() {
    println!("cargo:rerun-if-changed=shim/wrapper.h");
    println!("cargo:rerun-if-changed=shim/shim.h");
    println!("cargo:rerun-if-changed=shim/shim.c");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    match pkg_config::Config::new()
        .atleast_version(DPDK_MIN)
        .cargo_metadata(true)
        .probe("libdpdk")
    {
        Ok(_) => {}
        Err(e) => die(&format!(
            "DPDK {DPDK_MIN} (libdpdk) not found by pkg-config ({e}).\n\
             Install it with `apt-get install libdpdk-dev dpdk-dev pkg-config` \
             (or run scripts/setup)."
        )),
    }
    // Pull in the net_ring PMD for rte_eth_from_rings (ports made from rings
    // in-process). It is the same file EAL would dlopen from its PMD folder.
    println!("cargo:rustc-link-lib=rte_net_ring");
    println!("cargo:rustc-link-lib=rte_bus_vdev");

    // cflags exactly as pkg-config gives them, e.g. `-include rte_config.h
    // -march=corei7`, so the shim's inlined code matches the library's ABI.
    let raw = std::process::Command::new("pkg-config")
        .args(["--cflags", "libdpdk"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let flags: Vec<String> = raw.split_whitespace().map(str::to_owned).collect();

    let mut cc = cc::Build::new();
    cc.file("shim/shim.c").include("shim").opt_level(3).warnings(false);
    for f in &flags {
        cc.flag(f);
    }
    cc.compile("braid_dpdk_shim");

    let mut clang_args: Vec<String> = flags.clone();
    clang_args.push("-Ishim".into());
    let builder = bindgen::Builder::default()
        .header("shim/wrapper.h")
        .clang_args(&clang_args)
        .allowlist_function("rte_.*")
        .allowlist_function("braid_.*")
        .allowlist_type("rte_.*")
        .allowlist_var("RTE_.*")
        .allowlist_var("BRAID_.*")
        .allowlist_type("braid_consts")
        .allowlist_var("RING_F_.*")
        .allowlist_var("LCORE_ID_ANY")
        // Packed/aligned structs bindgen cannot lay out faithfully.
        .opaque_type("rte_arp_ipv4")
        .opaque_type("rte_arp_hdr")
        .opaque_type("rte_l2tpv2_combined_msg_hdr")
        .opaque_type("rte_gtp_psc_generic_hdr")
        .opaque_type("rte_gtp_psc_type0_hdr")
        .opaque_type("rte_gtp_psc_type1_hdr")
        .blocklist_type("max_align_t")
        .derive_default(true)
        .derive_debug(false)
        .prepend_enum_name(false)
        .default_enum_style(bindgen::EnumVariation::Consts)
        .layout_tests(true)
        .generate_comments(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    // bindgen panics when it cannot load libclang; turn that into the same
    // clear message as any other bindgen failure.
    let generated = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || builder.generate()));
    let hint = "bindgen needs libclang: `apt-get install clang libclang-dev` (or run scripts/setup).";
    let bindings = match generated {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => die(&format!("bindgen failed over DPDK's headers: {e}\n{hint}")),
        Err(_) => die(&format!("bindgen could not run (libclang not found?).\n{hint}")),
    };
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("write bindings.rs");
}
