#![allow(clippy::unwrap_used)]
//! Host fingerprint on fake trees and on this machine.

mod common;

use common::write;
use qgate_probe::{Fingerprint, Roots};

fn x86_cpuinfo() -> String {
    let mut text = String::new();
    let mut processor = 0;
    for socket in 0..2 {
        for core in 0..2 {
            for _thread in 0..2 {
                text += &format!(
                    "processor\t: {processor}\nvendor_id\t: GenuineIntel\n\
                     model name\t: Intel(R) Xeon(R) Fake 8480 @ 2.00GHz\n\
                     physical id\t: {socket}\ncore id\t\t: {core}\n\
                     flags\t\t: fpu vme ht sse4_1 sse4_2 avx avx2 fma avx512_vnni avx512vl junk_flag\n\n"
                );
                processor += 1;
            }
        }
    }
    text
}

#[test]
fn x86_fake_tree_gives_exact_fields() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "proc/cpuinfo", &x86_cpuinfo());
    write(
        root,
        "proc/meminfo",
        "MemTotal:       16384000 kB\nMemFree:         1000 kB\n",
    );
    write(root, "proc/sys/kernel/osrelease", "6.1.0-fake\n");
    write(
        root,
        "etc/os-release",
        "NAME=\"Fake\"\nPRETTY_NAME=\"Fake Linux 1.0\"\nID=fake\n",
    );
    let cpu0 = "sys/devices/system/cpu/cpu0/cpufreq";
    write(root, &format!("{cpu0}/scaling_governor"), "performance\n");
    write(root, &format!("{cpu0}/cpuinfo_max_freq"), "3500000\n");
    write(root, "sys/devices/system/cpu/smt/active", "1\n");

    let fp = Fingerprint::read(&Roots::under(root));
    assert_eq!(
        fp,
        Fingerprint {
            cpu_model: "Intel(R) Xeon(R) Fake 8480 @ 2.00GHz".into(),
            arch: std::env::consts::ARCH.into(),
            cpu_features: ["avx", "avx2", "avx512_vnni", "fma", "sse4_2"]
                .map(String::from)
                .to_vec(),
            logical_cores: 8,
            physical_cores: Some(4),
            memory_total_bytes: Some(16384000 * 1024),
            os: "Fake Linux 1.0".into(),
            kernel: Some("6.1.0-fake".into()),
            governor: Some("performance".into()),
            max_freq_mhz: Some(3500.0),
            smt: Some(true),
        }
    );
}

#[test]
fn arm_cpuinfo_reads_features_and_cpu_part() {
    let dir = tempfile::tempdir().unwrap();
    let block = |n: u32| {
        format!(
            "processor\t: {n}\nBogoMIPS\t: 50.00\n\
             Features\t: fp asimd evtstrm aes pmull crc32 atomics fphp asimdhp cpuid asimdrdm \
             asimddp sve i8mm bf16 sb junk\n\
             CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x1\n\
             CPU part\t: 0xd40\nCPU revision\t: 1\n\n"
        )
    };
    write(dir.path(), "proc/cpuinfo", &(block(0) + &block(1)));
    write(dir.path(), "sys/devices/system/cpu/smt/active", "0\n");
    let fp = Fingerprint::read(&Roots::under(dir.path()));
    assert_eq!(fp.cpu_model, "Neoverse-V1 (CPU part 0xd40)");
    assert_eq!(
        fp.cpu_features,
        ["asimd", "asimddp", "asimdhp", "bf16", "fphp", "i8mm", "sve"]
            .map(String::from)
            .to_vec()
    );
    assert_eq!(fp.logical_cores, 2);
    assert_eq!(fp.physical_cores, None);
    assert_eq!(fp.smt, Some(false));
    assert_eq!(fp.os, "unknown");
    assert_eq!(
        (fp.kernel, fp.governor, fp.max_freq_mhz),
        (None, None, None)
    );
    assert_eq!(fp.memory_total_bytes, None);
}

#[test]
fn arm_board_model_wins_over_cpu_part() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "proc/cpuinfo",
        "processor\t: 0\nFeatures\t: fp asimd\nCPU implementer\t: 0x41\nCPU part\t: 0xd08\n\n\
         Hardware\t: BCM2835\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n",
    );
    let fp = Fingerprint::read(&Roots::under(dir.path()));
    assert_eq!(fp.cpu_model, "Raspberry Pi 4 Model B Rev 1.4");
    assert_eq!(fp.cpu_features, vec!["asimd".to_string()]);
}

#[test]
fn this_machine_has_a_cpu() {
    let fp = Fingerprint::read(&Roots::default());
    assert!(fp.logical_cores >= 1);
    assert!(
        !fp.cpu_model.is_empty() && fp.cpu_model != "unknown",
        "{fp:?}"
    );
    assert_eq!(fp.arch, std::env::consts::ARCH);
    assert!(fp.memory_total_bytes.is_some_and(|b| b > 0), "{fp:?}");
}
