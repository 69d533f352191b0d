//! Differential test of `grid::placement` against allmydata 1.20 (tests/happiness_oracle.py): the same
//! servers-of-happiness on the same maps, share placements exactly as happy as Tahoe's wherever Tahoe's own
//! placement is sound (and as happy as any placement can be everywhere), every share placed, and the same
//! failure messages. The seed is printed and can be replayed with `TAHOE_MOUNT_TEST_SEED`; it also seeds
//! Python's string hashing, which decides the order of Tahoe's sets.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use tahoe_mount::grid::placement::{
    ServerIndex, failure_message, place_shares, servers_of_happiness,
};
use tahoe_mount::storage::ShareNumber;

type Layout = BTreeMap<ServerIndex, BTreeSet<ShareNumber>>;

/// xorshift64*: small, seedable, good enough to pick test cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

struct PlacementCase {
    total: u16,
    permuted: Vec<ServerIndex>,
    writable: BTreeSet<ServerIndex>,
    existing: Layout,
}

fn layout_json(layout: &Layout) -> Value {
    Value::Array(
        layout
            .iter()
            .map(|(server, shares)| json!([server, shares]))
            .collect(),
    )
}

fn random_layout(rng: &mut Rng) -> Layout {
    let servers = rng.below(30);
    let share_range = match rng.below(3) {
        0 => 1 + rng.below(5),
        1 => 1 + rng.below(40),
        _ => 65536,
    };
    let mut layout = Layout::new();
    for _ in 0..servers {
        let server = rng.below(64);
        let count = rng.below(6);
        let shares = (0..count)
            .map(|_| rng.below(share_range) as ShareNumber)
            .collect();
        layout.insert(server, shares);
    }
    layout
}

fn random_placement(rng: &mut Rng) -> PlacementCase {
    let total = match rng.below(10) {
        0 => 1 + rng.below(3),
        1..=7 => 1 + rng.below(20),
        _ => 20 + rng.below(30),
    } as u16;
    let n = usize::from(total);
    let server_count = rng.below(2 * n + 8);
    let mut permuted: Vec<ServerIndex> = (0..server_count).collect();
    rng.shuffle(&mut permuted);
    if !permuted.is_empty() && rng.chance(10) {
        let again = permuted[rng.below(permuted.len())];
        let at = rng.below(permuted.len() + 1);
        permuted.insert(at, again);
    }
    let writable_percent = [0, 20, 50, 80, 100][rng.below(5)];
    let mut writable: BTreeSet<ServerIndex> = (0..server_count)
        .filter(|_| rng.chance(writable_percent))
        .collect();
    if rng.chance(10) {
        writable.insert(server_count + rng.below(5)); // not in `permuted`: to be ignored
    }
    let holder_percent = [0, 10, 30, 60, 100][rng.below(5)];
    let mut existing = Layout::new();
    for server in 0..server_count {
        if rng.chance(holder_percent) {
            let count = match rng.below(4) {
                0 => n,
                _ => 1 + rng.below(3),
            };
            let shares = (0..count).map(|_| rng.below(n) as ShareNumber).collect();
            existing.insert(server, shares);
        }
    }
    if rng.chance(10) {
        // A holder outside the servers Tahoe would ask.
        existing.insert(
            server_count + 10,
            [rng.below(n) as ShareNumber].into_iter().collect(),
        );
    }
    PlacementCase {
        total,
        permuted,
        writable,
        existing,
    }
}

fn fixed_placements() -> Vec<PlacementCase> {
    let set = |s: &[usize]| s.iter().copied().collect::<BTreeSet<_>>();
    let layout = |entries: &[(usize, &[u16])]| -> Layout {
        entries
            .iter()
            .map(|&(s, shares)| (s, shares.iter().copied().collect()))
            .collect()
    };
    vec![
        // A fresh upload, 3-of-10 on 10 and on 4 servers; nothing writable; N = 0.
        PlacementCase {
            total: 10,
            permuted: (0..10).collect(),
            writable: set(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
            existing: Layout::new(),
        },
        PlacementCase {
            total: 10,
            permuted: vec![3, 1, 0, 2],
            writable: set(&[0, 1, 2, 3]),
            existing: Layout::new(),
        },
        PlacementCase {
            total: 10,
            permuted: vec![0, 1],
            writable: set(&[]),
            existing: layout(&[(0, &[0, 1])]),
        },
        PlacementCase {
            total: 0,
            permuted: vec![0, 1],
            writable: set(&[0, 1]),
            existing: Layout::new(),
        },
        // Re-upload of a file that is fully present, and one whose shares all sit on one server.
        PlacementCase {
            total: 4,
            permuted: vec![0, 1, 2, 3],
            writable: set(&[0, 1, 2, 3]),
            existing: layout(&[(0, &[0]), (1, &[1]), (2, &[2]), (3, &[3])]),
        },
        PlacementCase {
            total: 4,
            permuted: vec![0, 1, 2, 3],
            writable: set(&[0, 1, 2, 3]),
            existing: layout(&[(2, &[0, 1, 2, 3])]),
        },
        // Tahoe's own test_problem_layout_comment_52 shape: read-only servers holding overlapping shares.
        PlacementCase {
            total: 10,
            permuted: vec![0, 1, 2, 3, 4],
            writable: set(&[0]),
            existing: layout(&[(1, &[0]), (2, &[0]), (3, &[0]), (4, &[1])]),
        },
        // A bigger grid: 60 shares, 150 servers, every other one full, some of those holding shares.
        PlacementCase {
            total: 60,
            permuted: (0..150).rev().collect(),
            writable: (0..150).step_by(2).collect(),
            existing: (1..150)
                .step_by(7)
                .map(|s| (s, [(s % 13) as u16, (s % 17) as u16].into_iter().collect()))
                .collect(),
        },
    ]
}

fn merged(existing: &Layout, allocations: &Layout) -> Layout {
    let mut all = existing.clone();
    for (server, shares) in allocations {
        all.entry(*server).or_default().extend(shares);
    }
    all
}

fn all_placed(total: u16, layout: &Layout) -> bool {
    let present: BTreeSet<ShareNumber> = layout.values().flatten().copied().collect();
    (0..total).all(|s| present.contains(&s))
}

#[test]
fn happiness_and_placement_agree_with_allmydata() {
    let seed = common::test_seed("placement_tahoe");
    let mut rng = Rng(seed | 1);

    let mut happiness_maps: Vec<Layout> = vec![
        Layout::new(),
        [
            (1, [1, 2, 3, 4].into()),
            (2, [6].into()),
            (3, [3].into()),
            (4, [4].into()),
            (5, [2].into()),
        ]
        .into(),
        [(0, [0].into()), (1, [0].into()), (2, BTreeSet::new())].into(),
    ];
    happiness_maps.extend((0..300).map(|_| random_layout(&mut rng)));

    let mut placements = fixed_placements();
    placements.extend((0..300).map(|_| random_placement(&mut rng)));
    let ours: Vec<Layout> = placements
        .iter()
        .map(|c| place_shares(c.total, &c.permuted, &c.writable, &c.existing))
        .collect();
    // Our placed layouts go to Tahoe's servers_of_happiness too, so our happiness of them is checked there.
    let our_layouts: Vec<Layout> = placements
        .iter()
        .zip(&ours)
        .map(|(c, o)| merged(&c.existing, o))
        .collect();
    happiness_maps.extend(our_layouts.iter().cloned());

    let failures: Vec<(usize, u16, u16, usize)> = vec![
        (0, 3, 7, 0),
        (2, 3, 7, 2),
        (4, 3, 7, 2),
        (10, 3, 7, 5),
        (10, 3, 7, 3),
        (1, 1, 1, 0),
        (3, 3, 3, 2),
    ];

    let request = json!({
        "happiness": happiness_maps.iter().map(layout_json).collect::<Vec<_>>(),
        "placement": placements.iter().map(|c| json!({
            "total": c.total,
            "permuted": c.permuted,
            "writable": c.writable,
            "existing": layout_json(&c.existing),
        })).collect::<Vec<_>>(),
        "failure": failures.iter().map(|&(c, k, h, e)| json!([c, k, h, e])).collect::<Vec<_>>(),
    });
    let hash_seed = (seed % 4_294_967_296).to_string();
    let out = common::run_python(
        "tests/happiness_oracle.py",
        &[&hash_seed],
        request.to_string().as_bytes(),
    );
    let answer: Value = serde_json::from_slice(&out).expect("oracle JSON");

    // (a) servers_of_happiness: exactly Tahoe's, on every map, our placed layouts included.
    let tahoe_happiness = answer["happiness"].as_array().expect("happiness list");
    assert_eq!(tahoe_happiness.len(), happiness_maps.len());
    for (layout, tahoe) in happiness_maps.iter().zip(tahoe_happiness) {
        assert_eq!(
            servers_of_happiness(layout) as u64,
            tahoe.as_u64().expect("number"),
            "servers_of_happiness of {layout:?}"
        );
    }

    // (b) place_shares: as happy as Tahoe's share_placement, and as happy as anything could be.
    let tahoe_placements = answer["placement"].as_array().expect("placement list");
    assert_eq!(tahoe_placements.len(), placements.len());
    let (mut short_refused, mut short_dropped, mut exact) = (0, 0, 0);
    for (i, (case, tahoe)) in placements.iter().zip(tahoe_placements).enumerate() {
        let ours = &ours[i];
        let layout = &our_layouts[i];
        let happiness = servers_of_happiness(layout) as u64;
        let what = format!(
            "case {i}: N={} permuted={:?} writable={:?} existing={:?}\n ours={ours:?}\n tahoe={tahoe}",
            case.total, case.permuted, case.writable, case.existing
        );
        for (server, shares) in ours {
            assert!(
                case.writable.contains(server),
                "{what}: {server} is not writable"
            );
            let held = case.existing.get(server);
            assert!(
                shares
                    .iter()
                    .all(|s| *s < case.total && !held.is_some_and(|h| h.contains(s))),
                "{what}: server {server} asked for a share it has, or one beyond N"
            );
        }
        assert_eq!(
            happiness,
            tahoe["best"].as_u64().unwrap(),
            "{what}: not the best happiness"
        );
        let achieved = tahoe["achieved"].as_u64().unwrap();
        let refused = !tahoe["refused"].as_array().unwrap().is_empty();
        let dropped = !tahoe["dropped"].as_array().unwrap().is_empty();
        if refused || dropped {
            // Tahoe's known faults (see the module docs): read-only servers given shares they lack, or writable
            // servers left out because read-only ones were matched to all they hold.
            assert!(achieved <= happiness, "{what}");
            if achieved < happiness {
                short_refused += usize::from(refused);
                short_dropped += usize::from(dropped);
            }
        } else {
            assert_eq!(happiness, achieved, "{what}: Tahoe's placement is as happy");
            exact += 1;
        }
        let mut seen = BTreeSet::new();
        let has_candidate = case
            .permuted
            .iter()
            .filter(|s| seen.insert(**s))
            .take(2 * usize::from(case.total))
            .any(|s| case.writable.contains(s));
        if has_candidate {
            assert!(
                all_placed(case.total, layout),
                "{what}: a share is left unplaced"
            );
            if !refused {
                assert!(
                    tahoe["places_all"].as_bool().unwrap(),
                    "{what}: Tahoe leaves a share unplaced"
                );
            }
        } else {
            assert!(ours.is_empty(), "{what}");
        }
    }
    eprintln!(
        "placement_tahoe: {} placements, {exact} free of Tahoe's known faults and exactly as happy as Tahoe's; \
         Tahoe's fell short of the best in {short_refused} with read-only servers given shares they lack, \
         {short_dropped} with writable servers left out",
        placements.len()
    );

    // failure_message: word for word.
    let tahoe_failures = answer["failure"].as_array().expect("failure list");
    assert_eq!(tahoe_failures.len(), failures.len());
    for (&(c, k, h, e), tahoe) in failures.iter().zip(tahoe_failures) {
        assert_eq!(
            failure_message(c, k, h, e),
            tahoe.as_str().unwrap(),
            "failure_message{:?}",
            (c, k, h, e)
        );
    }
}
