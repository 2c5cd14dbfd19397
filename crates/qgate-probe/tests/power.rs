#![allow(clippy::unwrap_used)]
//! RAPL and Jetson meters on fake /sys trees.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{assert_close, is_root, write};
use qgate_probe::{Meter, Monitor, PhaseReading, ProbeConfig, Roots, Unavailable};

fn config(root: &Path) -> ProbeConfig {
    ProbeConfig {
        roots: Roots::under(root),
        nvml_lib: None,
        sample_interval: Duration::from_millis(10),
        enable_nvml: false,
    }
}

fn zone(root: &Path, zone: &str, name: &str, energy_uj: u64, max_uj: u64) {
    let dir = format!("sys/class/powercap/{zone}");
    write(root, &format!("{dir}/name"), &format!("{name}\n"));
    write(root, &format!("{dir}/energy_uj"), &format!("{energy_uj}\n"));
    write(
        root,
        &format!("{dir}/max_energy_range_uj"),
        &format!("{max_uj}\n"),
    );
}

fn set_energy(root: &Path, zone: &str, energy_uj: u64) {
    write(
        root,
        &format!("sys/class/powercap/{zone}/energy_uj"),
        &format!("{energy_uj}\n"),
    );
}

fn reason(missing: &[Unavailable], source: Meter) -> &str {
    &missing
        .iter()
        .find(|u| u.source == source)
        .unwrap_or_else(|| panic!("no {source} in {missing:?}"))
        .reason
}

#[test]
fn rapl_counts_packages_only_and_undoes_a_wrap() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    zone(
        root,
        "intel-rapl:0",
        "package-0",
        1_000_000,
        262_143_328_850,
    );
    zone(root, "intel-rapl:0:0", "core", 5_000_000, 262_143_328_850);
    zone(root, "intel-rapl:1", "package-1", 9_000_000, 10_000_000);
    zone(root, "intel-rapl:2", "psys", 7_000_000, 262_143_328_850);
    zone(
        root,
        "intel-rapl-mmio:0",
        "package-0",
        1_000_000,
        262_143_328_850,
    );

    let mut monitor = Monitor::new(&config(root));
    assert_eq!(monitor.sources(), vec![Meter::Rapl]);
    monitor.start();
    set_energy(root, "intel-rapl:0", 3_500_000);
    set_energy(root, "intel-rapl:1", 500_000); // wrapped at 10 J: 1 J + 0.5 J
    set_energy(root, "intel-rapl:0:0", 95_000_000);
    set_energy(root, "intel-rapl:2", 97_000_000);
    set_energy(root, "intel-rapl-mmio:0", 99_000_000);
    let phase = monitor.stop();

    assert_eq!(phase.energy.len(), 1, "{phase:?}");
    let rapl = &phase.energy[0];
    assert_eq!(rapl.source, Meter::Rapl);
    assert_eq!(
        rapl.domains,
        vec![
            ("package-0".to_string(), 2.5),
            ("package-1".to_string(), 1.5)
        ]
    );
    assert_eq!(rapl.joules, 4.0);
    assert!(
        rapl.scope.contains("package-0, package-1"),
        "{}",
        rapl.scope
    );
    assert!(rapl.scope.contains("includes other processes"));
    assert!(rapl.seconds > 0.0);
    assert_eq!(rapl.seconds, phase.wall_s);
    assert_eq!(rapl.mean_watts, rapl.joules / rapl.seconds);
}

#[test]
fn rapl_uses_psys_only_without_a_package() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    zone(root, "intel-rapl:0", "psys", 2_000_000, 262_143_328_850);
    zone(root, "intel-rapl:0:0", "core", 0, 262_143_328_850);
    let mut monitor = Monitor::new(&config(root));
    monitor.start();
    set_energy(root, "intel-rapl:0", 2_750_000);
    set_energy(root, "intel-rapl:0:0", 100_000_000);
    let phase = monitor.stop();
    assert_eq!(phase.energy[0].domains, vec![("psys".to_string(), 0.75)]);
    assert!(phase.energy[0].scope.contains("psys"));
}

#[test]
fn unreadable_energy_uj_is_unavailable_naming_the_file() {
    if is_root() {
        eprintln!("running as root, who reads any file: permission assertion skipped");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    zone(root, "intel-rapl:0", "package-0", 1, 100);
    let file = root.join("sys/class/powercap/intel-rapl:0/energy_uj");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o000)).unwrap();
    let monitor = Monitor::new(&config(root));
    assert!(monitor.sources().is_empty());
    let why = reason(monitor.unavailable(), Meter::Rapl);
    assert!(why.contains(&file.display().to_string()), "{why}");
    assert!(why.contains("permission denied"), "{why}");
}

#[test]
fn rapl_failing_mid_run_is_dropped_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    zone(root, "intel-rapl:0", "package-0", 1_000, 100_000_000);
    let mut monitor = Monitor::new(&config(root));
    monitor.start();
    let file = root.join("sys/class/powercap/intel-rapl:0/energy_uj");
    std::fs::remove_file(&file).unwrap();
    let phase = monitor.stop();
    assert!(phase.energy.is_empty(), "{phase:?}");
    assert!(reason(monitor.unavailable(), Meter::Rapl).contains(&file.display().to_string()));
    assert!(monitor.sources().is_empty());
}

#[test]
fn empty_tree_has_no_meters_but_still_times_the_phase() {
    let dir = tempfile::tempdir().unwrap();
    let mut monitor = Monitor::new(&config(dir.path()));
    assert!(monitor.sources().is_empty());
    assert!(reason(monitor.unavailable(), Meter::Rapl).contains("powercap"));
    assert!(reason(monitor.unavailable(), Meter::Jetson).contains("ina3221"));
    assert!(reason(monitor.unavailable(), Meter::Nvml).contains("disabled"));
    monitor.start();
    std::thread::sleep(Duration::from_millis(5));
    let phase = monitor.stop();
    assert!(phase.wall_s >= 0.005, "{phase:?}");
    assert_eq!(
        phase,
        PhaseReading {
            wall_s: phase.wall_s,
            ..PhaseReading::default()
        }
    );

    // A powercap folder without RAPL zones is a different reason.
    write(dir.path(), "sys/class/powercap/dtpm/name", "dtpm\n");
    let monitor = Monitor::new(&config(dir.path()));
    assert!(reason(monitor.unavailable(), Meter::Rapl).contains("intel-rapl:* zone"));
}

/// Runs one phase of about `millis` and returns the reading and the phase length.
fn phase(root: &Path, millis: u64) -> (PhaseReading, Monitor) {
    let mut monitor = Monitor::new(&config(root));
    assert_eq!(monitor.sources(), vec![Meter::Jetson]);
    monitor.start();
    std::thread::sleep(Duration::from_millis(millis));
    (monitor.stop(), monitor)
}

#[test]
fn jetson_iio_layout_uses_vdd_in_as_the_board_total() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let iio = "sys/bus/i2c/drivers/ina3221x/1-0040/iio:device0";
    for (k, name, mw) in [
        (0, "VDD_IN", 5000),
        (1, "VDD_CPU", 2000),
        (2, "VDD_GPU", 1000),
    ] {
        write(root, &format!("{iio}/rail_name_{k}"), &format!("{name}\n"));
        write(
            root,
            &format!("{iio}/in_power{k}_input"),
            &format!("{mw}\n"),
        );
    }
    let (reading, _) = phase(root, 300);
    let jetson = &reading.energy[0];
    let t = jetson.seconds;
    assert_close(t, reading.wall_s, 0.15, "seconds covered");
    assert_close(jetson.joules, 5.0 * t, 0.15, "VDD_IN joules");
    assert_eq!(jetson.scope, "Jetson rail VDD_IN (whole board)");
    let names: Vec<&str> = jetson.domains.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["VDD_IN", "VDD_CPU", "VDD_GPU"]);
    assert_close(jetson.domains[1].1, 2.0 * t, 0.15, "VDD_CPU joules");
    assert_close(jetson.domains[2].1, 1.0 * t, 0.15, "VDD_GPU joules");
    assert_close(jetson.mean_watts, 5.0, 0.15, "mean watts");
}

#[test]
fn jetson_hwmon_layout_multiplies_volts_by_amps_and_skips_the_sum_channel() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let hw = "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3";
    // mV × mA: 5 V × 1.2 A = 6 W; 5 V × 0.4 A = 2 W.
    for (k, name, mv, ma) in [(1, "vdd_in", 5000, 1200), (2, "VDD_CPU_GPU_CV", 5000, 400)] {
        write(root, &format!("{hw}/in{k}_label"), &format!("{name}\n"));
        write(root, &format!("{hw}/in{k}_input"), &format!("{mv}\n"));
        write(root, &format!("{hw}/curr{k}_input"), &format!("{ma}\n"));
    }
    write(root, &format!("{hw}/in7_label"), "sum of shunt voltages\n");
    write(root, &format!("{hw}/in7_input"), "40\n");
    let (reading, _) = phase(root, 300);
    let jetson = &reading.energy[0];
    let t = jetson.seconds;
    assert_close(t, reading.wall_s, 0.15, "seconds covered");
    assert_close(jetson.joules, 6.0 * t, 0.15, "vdd_in joules");
    assert!(
        jetson.scope.contains("vdd_in (whole board)"),
        "{}",
        jetson.scope
    );
    assert_eq!(jetson.domains.len(), 2, "{:?}", jetson.domains);
    assert_close(jetson.domains[1].1, 2.0 * t, 0.15, "VDD_CPU_GPU_CV joules");
}

#[test]
fn jetson_without_a_board_rail_sums_the_rails() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let hw = "sys/bus/i2c/drivers/ina3221/7-0041/hwmon/hwmon0";
    for (k, name, ma) in [(1, "CPU", 400), (2, "GPU", 600)] {
        write(root, &format!("{hw}/in{k}_label"), &format!("{name}\n"));
        write(root, &format!("{hw}/in{k}_input"), "5000\n");
        write(root, &format!("{hw}/curr{k}_input"), &format!("{ma}\n"));
    }
    let (reading, _) = phase(root, 250);
    let jetson = &reading.energy[0];
    assert_close(jetson.joules, 5.0 * jetson.seconds, 0.15, "summed joules");
    assert!(jetson.scope.contains("sum"), "{}", jetson.scope);
}

#[test]
fn jetson_rail_failing_mid_run_is_dropped_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let iio = "sys/bus/i2c/drivers/ina3221x/1-0040/iio:device0";
    write(root, &format!("{iio}/rail_name_0"), "VDD_IN\n");
    write(root, &format!("{iio}/in_power0_input"), "5000\n");
    let mut monitor = Monitor::new(&config(root));
    monitor.start();
    write(root, &format!("{iio}/in_power0_input"), "garbage\n");
    std::thread::sleep(Duration::from_millis(50));
    let phase = monitor.stop();
    assert!(phase.energy.is_empty(), "{phase:?}");
    assert!(reason(monitor.unavailable(), Meter::Jetson).contains("in_power0_input"));
    assert!(monitor.sources().is_empty());
}
