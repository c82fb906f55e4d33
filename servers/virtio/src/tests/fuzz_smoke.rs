//! Short runs of the fuzz targets over seeded pseudo-random and mutated inputs. The long runs
//! use cargo-fuzz (servers/virtio/fuzz, see docs/virtio.md).

use super::model::Rng;
use crate::fuzz::{QUEUE_SIZE, device_chain_parsing, device_chain_seed, driver_used_parsing};

const INTERESTING_U16: [u16; 9] = [0, 1, 2, 7, 8, 9, 0x7fff, 0x8000, 0xffff];

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, hot_len: usize) {
    for _ in 0..1 + rng.below(6) {
        if input.len() < 8 {
            input.extend_from_slice(&rng.next().to_le_bytes());
        }
        let hot = hot_len.min(input.len()) as u64;
        match rng.below(5) {
            0 => {
                let at = rng.below(input.len() as u64) as usize;
                input[at] = rng.next() as u8;
            }
            1 => {
                let at = (rng.below(hot.max(2) - 1) & !1) as usize;
                let value = INTERESTING_U16[rng.below(INTERESTING_U16.len() as u64) as usize];
                input[at..at + 2].copy_from_slice(&value.to_le_bytes());
            }
            2 => {
                // A small address or length, so buffers land near the grant's edges.
                let at = (rng.below(hot.max(8) - 7) & !7) as usize;
                let value = rng.below(9000);
                input[at..at + 8].copy_from_slice(&value.to_le_bytes());
            }
            3 => {
                let at = rng.below(hot.max(1)) as usize;
                input[at] ^= 1 << rng.below(8);
            }
            _ => input.truncate(rng.below(input.len() as u64 + 1) as usize),
        }
    }
}

#[test]
#[cfg_attr(miri, ignore)]
fn device_chain_parsing_survives_mutated_rings() {
    let mut rng = Rng(0xdead_beef);
    let mut seeds = Vec::new();
    for flags in 0..8u8 {
        for chains in 1..4 {
            seeds.push(device_chain_seed(
                flags & 1 != 0,
                flags & 2 != 0,
                flags & 4 != 0,
                chains,
            ));
        }
    }
    for seed in &seeds {
        assert!(
            device_chain_parsing(seed) > 0,
            "a valid seed serves its chains"
        );
    }
    let (mut inputs_served, mut inputs_refused) = (0, 0);
    for i in 0..3000 {
        let mut input = seeds[i % seeds.len()].clone();
        // Mutate where the structure is: mostly the ring, sometimes the indirect tables too.
        let hot = if i % 3 == 0 { 2 + 4096 } else { 2 + 256 };
        mutate(&mut rng, &mut input, hot);
        match device_chain_parsing(&input) {
            0 => inputs_refused += 1,
            _ => inputs_served += 1,
        }
    }
    for _ in 0..500 {
        let len = rng.below(600) as usize;
        let input: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        device_chain_parsing(&input);
    }
    // The mutations must reach both outcomes, or the run explores nothing.
    assert!(
        inputs_served > 300 && inputs_refused > 300,
        "{inputs_served} served, {inputs_refused} refused"
    );
}

fn driver_input(rng: &mut Rng) -> Vec<u8> {
    let flags = rng.below(8) as u8;
    let submissions = rng.below(QUEUE_SIZE as u64 + 1) as u8;
    let mut input = vec![flags, submissions];
    input.extend((0..submissions).map(|_| rng.next() as u8));
    let n = QUEUE_SIZE as u64;
    if flags & 1 == 0 {
        // A plausible used ring: flags, idx, then (id, len) entries.
        input.extend_from_slice(&0u16.to_le_bytes());
        input.extend_from_slice(&(rng.below(n + 2) as u16).to_le_bytes());
        for _ in 0..n {
            input.extend_from_slice(&(rng.below(n + 2) as u32).to_le_bytes());
            input.extend_from_slice(&(rng.below(40) as u32).to_le_bytes());
        }
    } else {
        // Plausible used descriptors: addr, len, id, flags.
        const FLAGS: [u16; 4] = [0x8082, 0x8080, 0x0080, 0];
        for _ in 0..n {
            input.extend_from_slice(&rng.next().to_le_bytes());
            input.extend_from_slice(&(rng.below(40) as u32).to_le_bytes());
            input.extend_from_slice(&(rng.below(n + 2) as u16).to_le_bytes());
            input.extend_from_slice(&FLAGS[rng.below(4) as usize].to_le_bytes());
        }
    }
    input
}

#[test]
#[cfg_attr(miri, ignore)]
fn driver_used_parsing_survives_hostile_devices() {
    let mut rng = Rng(0x0bad_cafe);
    let (mut accepted, mut inputs_with_completions) = (0, 0);
    for _ in 0..3000 {
        let mut input = driver_input(&mut rng);
        if rng.below(2) == 0 {
            mutate(&mut rng, &mut input, 200);
        }
        let completed = driver_used_parsing(&input);
        accepted += completed;
        inputs_with_completions += usize::from(completed > 0);
    }
    // Plausible hostile devices get some completions accepted and most refused.
    assert!(
        inputs_with_completions > 100 && inputs_with_completions < 2900,
        "{inputs_with_completions}"
    );
    assert!(accepted > inputs_with_completions);
}

#[test]
fn fuzz_targets_run_under_miri_too() {
    // A handful of inputs, cheap enough for Miri.
    let mut rng = Rng(7);
    let seed = device_chain_seed(false, true, true, 2);
    device_chain_parsing(&seed);
    let mut mutated = seed.clone();
    mutate(&mut rng, &mut mutated, 300);
    device_chain_parsing(&mutated);
    device_chain_parsing(&device_chain_seed(true, true, false, 3));
    for _ in 0..4 {
        driver_used_parsing(&driver_input(&mut rng));
    }
}
