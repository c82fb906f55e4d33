//! The descriptions shipped in `systems/` are valid and resolve as documented.

use std::path::{Path, PathBuf};

use bulkhead_sysdesc::*;

fn systems_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../systems")
}

/// The programs that exist, with their configuration schemas, read the way the image builder
/// reads them.
fn programs() -> Programs {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let programs = Programs::discover(&root).unwrap_or_else(|reports| {
        panic!(
            "{}",
            reports.iter().map(|r| r.render(false)).collect::<String>()
        )
    });
    assert!(programs.names().unwrap().len() > 20);
    programs
}

/// Every program that reads its configuration declares a schema for it.
#[test]
fn every_program_that_reads_configuration_has_a_schema() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let programs = programs();
    let mut with_schema = 0;
    for (name, dir) in schema::program_dirs(&root) {
        let main = std::fs::read_to_string(dir.join("src/main.rs")).unwrap();
        let partition = std::fs::read_to_string(dir.join("src/partition.rs")).unwrap_or_default();
        let reads = [main, partition]
            .iter()
            .any(|s| s.contains("config::read("));
        let has = dir.join(schema::SCHEMA_FILE).exists();
        // Servers may read theirs through iokit, so their own source need not say so.
        assert!(
            has || !reads,
            "{name} reads its configuration but has no {}",
            schema::SCHEMA_FILE
        );
        let schema = programs.schema(&name).unwrap();
        with_schema += usize::from(has);
        for key in schema.config.values().chain(schema.channel.values()) {
            assert!(!key.doc.is_empty(), "{name}");
        }
    }
    for server in [
        "virtio-blk-server",
        "virtio-net-server",
        "virtio-console-server",
        "virtio-rng-server",
    ] {
        assert!(
            !programs.schema(server).unwrap().config.is_empty(),
            "{server}"
        );
    }
    assert!(with_schema >= 10, "{with_schema}");
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
    assert_eq!(system.arches, vec![Arch::X86_64]);
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
            (id("blk"), 0, 4),
            (id("storage"), 4, 4),
            (id("archive"), 8, 3),
            (id("net"), 11, 4),
            (id("web"), 15, 4),
            (id("console"), 19, 3),
            (id("greeter"), 22, 3),
            (id("rng"), 25, 2),
            (id("entropy"), 27, 2),
            (id("blk"), 29, 4),
            (id("net"), 33, 4),
        ]
    );
    assert_eq!(system.schedule.major_frame_ns, 40 * ms);
    assert!(system.schedule.background.is_empty());

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
    assert!(disk.on(Arch::Aarch64).is_none());
    assert_eq!(system.partitions[id("blk").0].devices, vec![DeviceId(0)]);
    let net = &system.devices[system.device("net0").unwrap().0];
    assert_eq!(
        (net.owner, net.on(Arch::X86_64).unwrap().msi),
        (Some(id("net")), 0)
    );

    let blk = &system.partitions[id("blk").0];
    assert_eq!(
        blk.health,
        HealthPolicy::Restart {
            max_restarts: 3,
            period_ns: 1_000_000_000
        }
    );
    assert_eq!(blk.dma[0].size, 256 * 1024);
    assert_eq!(blk.config["queue-depth"].as_integer(), Some(64));
    // Settings the description leaves out arrive with the schema's default.
    assert_eq!(blk.config["slot-kib"].as_integer(), Some(64));
    let storage = &system.partitions[id("storage").0];
    assert_eq!(storage.config["kick"].as_str(), Some("storage-disk-kick"));
    assert_eq!(storage.config["mode"].as_str(), Some("normal"));

    let chan = system
        .channels
        .iter()
        .find(|c| c.name == "archive-disk")
        .unwrap();
    assert_eq!((chan.client, chan.server), (id("archive"), id("blk")));
    assert_eq!(chan.message_size, 64);
    assert_eq!(chan.config["access"].as_str(), Some("read-only"));
    assert_eq!(chan.config["irq"].as_str(), Some("archive-disk-irq"));

    // Each client's kick reaches its server, each server's interrupt its client: bits are
    // given per receiver in declaration order.
    let note = &system.notifications[0];
    assert_eq!(note.name, "storage-disk-kick");
    assert_eq!((note.receiver, note.bit), (id("blk"), 0));
    assert_eq!(note.senders, vec![id("storage")]);
    let note = &system.notifications[3];
    assert_eq!(note.name, "archive-disk-irq");
    assert_eq!((note.receiver, note.bit), (id("archive"), 0));

    let shared = &system.shared_regions[0];
    assert_eq!(shared.name, "storage-disk");
    assert_eq!(
        shared.mappings,
        vec![
            Mapping {
                partition: id("storage"),
                access: Access::ReadWrite
            },
            Mapping {
                partition: id("blk"),
                access: Access::ReadWrite
            },
        ]
    );
    assert_eq!(system.memory_pool(Arch::X86_64).unwrap().total(), 64 << 20);
    assert_eq!(
        system.programs(),
        vec![
            "demo-console",
            "demo-entropy",
            "demo-net",
            "demo-storage",
            "virtio-blk-server",
            "virtio-console-server",
            "virtio-net-server",
            "virtio-rng-server"
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
        check_file(&file, &Programs::unchecked())
            .unwrap()
            .system
            .is_some()
    );
}

#[test]
fn an_unreadable_file_is_a_report() {
    let err = load(
        Path::new("/nonexistent/system.toml"),
        &Programs::unchecked(),
    )
    .unwrap_err();
    assert!(err.has_errors());
    assert!(
        err.diagnostics[0]
            .message
            .starts_with("cannot read the description")
    );
}
