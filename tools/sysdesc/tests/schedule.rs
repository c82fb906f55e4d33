//! The schedule rules, checked on small descriptions built in the test.

use bulkhead_sysdesc::*;

const MS: u64 = 1_000_000;

/// A description with partitions `a`, `b` and `c` and the given `[schedule]` body.
fn with_schedule(schedule: &str) -> Outcome {
    let mut text = String::from("[system]\nname = \"s\"\narch = [\"x86_64\"]\n");
    for p in ["a", "b", "c"] {
        text.push_str(&format!(
            "\n[partitions.{p}]\nmemory = \"64 KiB\"\nthreads = [{{ name = \"main\", priority = 1 }}]\n"
        ));
    }
    text.push_str("\n[schedule]\n");
    text.push_str(schedule);
    check_str("s.toml", &text, &Programs::unchecked())
}

fn errors(outcome: &Outcome) -> Vec<String> {
    outcome.report.errors().map(|d| d.message.clone()).collect()
}

fn windows(outcome: &Outcome) -> Vec<(usize, u64, u64)> {
    let system = outcome.system.as_ref().expect("valid schedule");
    system
        .schedule
        .windows
        .iter()
        .map(|w| (w.partition.0, w.offset_ns / MS, w.length_ns / MS))
        .collect()
}

#[test]
fn windows_without_offset_follow_each_other() {
    let o = with_schedule(
        r#"major-frame = "12 ms"
windows = [
    { partition = "a", length = "2 ms" },
    { partition = "b", length = "3 ms" },
    { partition = "c", offset = "7 ms", length = "1 ms" },
    { partition = "a", length = "4 ms" },
]"#,
    );
    assert_eq!(errors(&o), Vec::<String>::new());
    assert_eq!(
        windows(&o),
        vec![(0, 0, 2), (1, 2, 3), (2, 7, 1), (0, 8, 4)]
    );
}

#[test]
fn windows_are_sorted_by_offset_and_may_leave_gaps() {
    let o = with_schedule(
        r#"major-frame = "10 ms"
windows = [
    { partition = "b", offset = "6 ms", length = "2 ms" },
    { partition = "a", offset = "1 ms", length = "2 ms" },
    { partition = "c", offset = "3 ms", length = "1 ms" },
]"#,
    );
    assert_eq!(windows(&o), vec![(0, 1, 2), (2, 3, 1), (1, 6, 2)]);
}

#[test]
fn a_window_may_end_exactly_at_the_major_frame() {
    let o = with_schedule(
        r#"major-frame = "1 ms"
background = ["b", "c"]
windows = [{ partition = "a", offset = "500 us", length = "500 us" }]"#,
    );
    assert_eq!(windows(&o), vec![(0, 0, 0)]);
    let w = o.system.unwrap().schedule.windows[0];
    assert_eq!((w.offset_ns, w.end_ns()), (500_000, 1_000_000));
}

#[test]
fn overlap_is_found_behind_a_long_window() {
    // c overlaps a (0..10) although b, which lies between them in offset order, ends early.
    let o = with_schedule(
        r#"major-frame = "20 ms"
windows = [
    { partition = "a", offset = "0 ms", length = "10 ms" },
    { partition = "b", offset = "2 ms", length = "1 ms" },
    { partition = "c", offset = "9 ms", length = "2 ms" },
]"#,
    );
    assert_eq!(
        errors(&o),
        vec![
            "window of \"b\" (2 ms..3 ms) overlaps window of \"a\" (0 ms..10 ms)",
            "window of \"c\" (9 ms..11 ms) overlaps window of \"a\" (0 ms..10 ms)",
        ]
    );
    assert!(o.system.is_none());
}

#[test]
fn identical_windows_overlap() {
    let o = with_schedule(
        r#"major-frame = "4 ms"
background = ["c"]
windows = [
    { partition = "a", offset = "0 ms", length = "2 ms" },
    { partition = "b", offset = "0 ms", length = "2 ms" },
]"#,
    );
    assert_eq!(
        errors(&o),
        vec!["window of \"b\" (0 ms..2 ms) overlaps window of \"a\" (0 ms..2 ms)"]
    );
}

#[test]
fn every_schedule_error_is_reported_at_once() {
    let o = with_schedule(
        r#"major-frame = "10 ms"
windows = [
    { partition = "a", length = "0 ms" },
    { partition = "b", offset = "8 ms", length = "4 ms" },
    { partition = "zz", length = "1 ms" },
]"#,
    );
    let lines: Vec<String> = o
        .report
        .errors()
        .map(|d| format!("{}:{}: {}", d.line, d.column, d.message))
        .collect();
    assert_eq!(
        lines,
        vec![
            "13:13: partition \"c\" has no window and is not in the background set, so it would \
             never run",
            "20:33: window of \"a\" has zero length",
            "21:5: window of \"b\" (8 ms..12 ms) runs past the end of the major frame (10 ms)",
            "22:5: window of \"zz\" (12 ms..13 ms) runs past the end of the major frame (10 ms)",
            "22:19: unknown partition \"zz\"",
        ]
    );
}

#[test]
fn the_background_set_alone_is_a_schedule() {
    let o = with_schedule(
        r#"major-frame = "5 ms"
background = ["a", "b", "c"]"#,
    );
    let system = o.system.expect("valid");
    assert!(system.schedule.windows.is_empty());
    assert_eq!(
        system.schedule.background,
        vec![PartitionId(0), PartitionId(1), PartitionId(2)]
    );
}

#[test]
fn an_unused_device_is_only_a_warning() {
    let text = r#"[system]
name = "w"
arch = ["x86_64"]

[partitions.a]
memory = "64 KiB"
threads = [{ name = "main", priority = 1 }]

[schedule]
major-frame = "1 ms"
background = ["a"]

[devices.spare]
io-ports = [{ base = 0x2f8, count = 8 }]
"#;
    let o = check_str("w.toml", text, &Programs::unchecked());
    assert!(!o.report.has_errors());
    let d = &o.report.diagnostics[0];
    assert_eq!(d.severity, Severity::Warning);
    assert_eq!(
        (d.line, d.column, d.message.as_str()),
        (13, 10, "device \"spare\" is not granted to any partition")
    );
    let system = o.into_result().expect("warnings do not invalidate");
    assert_eq!(system.devices[0].owner, None);
}

#[test]
fn suspicious_but_legal_descriptions_give_warnings() {
    let text = r#"[system]
name = "w"
arch = ["x86_64"]

[partitions.a]
memory = "64 KiB"
threads = [{ name = "main", priority = 1 }]
dma = [{ name = "buf", size = "4 KiB" }]

[partitions.b]
memory = "64 KiB"
threads = [{ name = "main", priority = 1 }]

[schedule]
major-frame = "1 ms"
background = ["a", "b"]

[shared.table]
size = "4 KiB"
map = [
    { partition = "a", access = "read-only" },
    { partition = "b", access = "read-only" },
]
"#;
    let o = check_str("w.toml", text, &Programs::unchecked());
    let warnings: Vec<String> = o
        .report
        .diagnostics
        .iter()
        .map(|d| format!("{} {}:{}: {}", d.severity, d.line, d.column, d.message))
        .collect();
    assert_eq!(
        warnings,
        vec![
            "warning 8:8: partition \"a\" owns DMA regions but no device that could use them",
            "warning 20:7: no partition can write shared region \"table\": every mapping is \
             read-only",
        ]
    );
    assert!(o.system.is_some());
}
