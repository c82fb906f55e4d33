//! The descriptions shipped in `systems/` are valid and resolve as documented.

use std::path::{Path, PathBuf};

use bulkhead_sysdesc::*;

fn systems_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../systems")
}

/// The programs the shipped systems name (the image builder passes the real crate list).
fn programs() -> Programs {
    Programs::known([
        "hello",
        "counter",
        "crash-kernel-write",
        "crash-jump",
        "spinner",
        "hostile",
        "syscall-fuzz",
        "memcheck",
        "echo-server",
        "echo-client",
        "watcher",
        "black-hole",
        "stuck",
        "bench-client",
        "bench-server",
        "shm-producer",
        "shm-consumer",
        "dma-user",
        "demo-control",
        "demo-storage",
        "demo-logger",
        "virtio-blk-server",
        "console-server",
        "virtio-console-server",
        "virtio-rng-server",
        "demo-console",
        "demo-entropy",
    ])
}

#[test]
fn every_shipped_system_is_valid_without_warnings() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(systems_dir())
        .expect("systems/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(names.contains(&"demo.toml".to_owned()), "{names:?}");
    assert!(names.contains(&"hello.toml".to_owned()), "{names:?}");
    // Test systems that exercise something real systems would not do, with the warnings they
    // must produce and nothing else.
    let expected_warnings: &[(&str, &[&str])] = &[(
        "dma.toml",
        &[
            "partition \"a\" owns DMA regions but no device that could use them",
            "partition \"b\" owns DMA regions but no device that could use them",
        ],
    )];
    for file in files {
        let outcome = check_file(&file, &programs()).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let wanted = expected_warnings
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(&[][..], |(_, w)| *w);
        let got: Vec<&str> = outcome
            .report
            .diagnostics
            .iter()
            .map(|d| d.message.as_str())
            .collect();
        assert_eq!(got, wanted, "{}", outcome.report.render(false));
        assert!(outcome.system.is_some());
    }
}

#[test]
fn demo_resolves_as_documented() {
    let system = load(&systems_dir().join("demo.toml"), &programs()).unwrap();
    assert_eq!(system.name, "demo");
    assert_eq!(system.arches, vec![Arch::X86_64, Arch::Aarch64]);
    let id = |n: &str| system.partition(n).unwrap();
    let ms = 1_000_000;
    let windows: Vec<(PartitionId, u64, u64)> = system
        .schedule
        .windows
        .iter()
        .map(|w| (w.partition, w.offset_ns / ms, w.length_ns / ms))
        .collect();
    assert_eq!(
        windows,
        vec![
            (id("control"), 0, 4),
            (id("blk"), 4, 3),
            (id("storage"), 7, 5),
            (id("console"), 12, 2),
            (id("control"), 14, 4),
        ]
    );
    assert_eq!(system.schedule.major_frame_ns, 20 * ms);
    assert_eq!(system.schedule.background, vec![id("logger")]);
    assert!(system.partitions[id("logger").0].background);

    let disk = &system.devices[system.device("disk0").unwrap().0];
    assert_eq!(disk.owner, Some(id("blk")));
    let x86 = disk.on(Arch::X86_64).unwrap();
    assert_eq!(
        x86.pci.unwrap().address,
        Some(PciAddress {
            bus: 0,
            device: 4,
            function: 0
        })
    );
    assert_eq!(x86.msi, 2);
    let arm = disk.on(Arch::Aarch64).unwrap();
    assert_eq!(arm.pci, None);
    assert_eq!(arm.mmio[0].base, 0x0a00_3e00);
    assert_eq!(arm.mmio[0].cache, CacheAttr::Device);
    assert_eq!(arm.irqs, vec![79]);
    assert_eq!(system.partitions[id("blk").0].devices, vec![DeviceId(0)]);

    let uart = &system.devices[system.device("uart").unwrap().0];
    assert_eq!(
        uart.on(Arch::X86_64).unwrap().io_ports,
        vec![IoPortRange {
            base: 0x3f8,
            count: 8
        }]
    );
    assert!(uart.on(Arch::Aarch64).unwrap().io_ports.is_empty());

    let blk = &system.partitions[id("blk").0];
    assert_eq!(
        blk.health,
        HealthPolicy::Restart {
            max_restarts: 3,
            period_ns: 1_000_000_000
        }
    );
    assert_eq!(blk.dma[0].size, 64 * 1024);
    assert_eq!(blk.config["queue-depth"].as_integer(), Some(64));
    assert_eq!(
        system.partitions[id("control").0].health,
        HealthPolicy::Halt
    );

    let chan = system
        .channels
        .iter()
        .find(|c| c.name == "control-disk")
        .unwrap();
    assert_eq!((chan.client, chan.server), (id("control"), id("blk")));
    assert_eq!(chan.message_size, 256);
    assert_eq!(chan.config["access"].as_str(), Some("read-only"));

    let note = &system.notifications[0];
    assert_eq!((note.receiver, note.bit), (id("storage"), 0));
    assert_eq!(note.senders, vec![id("blk")]);

    let shared = &system.shared_regions[1];
    assert_eq!(shared.name, "control-status");
    assert_eq!(
        shared.mappings,
        vec![
            Mapping {
                partition: id("control"),
                access: Access::ReadWrite
            },
            Mapping {
                partition: id("logger"),
                access: Access::ReadOnly
            },
        ]
    );
    assert_eq!(system.memory_pool(Arch::Aarch64).unwrap().total(), 64 << 20);
    assert_eq!(
        system.programs(),
        vec![
            "console-server",
            "demo-control",
            "demo-logger",
            "demo-storage",
            "virtio-blk-server"
        ]
    );
}

#[test]
fn hello_is_two_instances_of_one_program() {
    let system = load(&systems_dir().join("hello.toml"), &programs()).unwrap();
    assert_eq!(system.partitions.len(), 2);
    assert_eq!(system.programs(), vec!["hello"]);
    assert_eq!(system.schedule.windows.len(), 2);
    assert_eq!(system.schedule.windows[1].offset_ns, 5_000_000);
}

#[test]
fn unknown_programs_are_checked_only_against_a_known_set() {
    let file = systems_dir().join("hello.toml");
    let outcome = check_file(&file, &Programs::known(["other"])).unwrap();
    let messages: Vec<&str> = outcome
        .report
        .errors()
        .map(|d| d.message.as_str())
        .collect();
    assert_eq!(
        messages,
        vec!["unknown program \"hello\"", "unknown program \"hello\""]
    );
    assert!(outcome.system.is_none());
    assert!(
        check_file(&file, &Programs::Unchecked)
            .unwrap()
            .system
            .is_some()
    );
}

#[test]
fn an_unreadable_file_is_a_report() {
    let err = load(Path::new("/nonexistent/system.toml"), &Programs::Unchecked).unwrap_err();
    assert!(err.has_errors());
    assert!(
        err.diagnostics[0]
            .message
            .starts_with("cannot read the description")
    );
}
