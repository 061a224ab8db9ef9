//! How a Consumer's partitions are split over its instances.
//!
//! `instances = ceil(partitions / per_instance)`; partitions are split into that
//! many consecutive buckets whose sizes differ by at most one, the larger ones first
//! (Konsumerator's `SplitIntoBuckets`): 10 at 3 per instance is
//! `[0,1,2] [3,4,5] [6,7] [8,9]`.

use std::ops::Range;

/// The most partitions konsumer lays out for one Consumer. Kafka topics this
/// large are rare; the bound keeps what validation accepts affordable (a typo
/// such as `numPartitions: 2147483647` once cost gigabytes) and the status
/// within the 1.5 MiB Kubernetes object limit.
pub const MAX_PARTITIONS: u32 = 10_000;

/// The most instances of one Consumer: each is a workload, and an entry of the
/// Consumer's status, which Kubernetes stores in one object of at most 1.5 MiB.
pub const MAX_INSTANCES: u32 = 1_000;

/// The most recommendations (instances × scaled containers) one status holds.
pub const MAX_RECOMMENDATIONS: u32 = 2_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    partitions: u32,
    instances: u32,
}

impl Layout {
    /// `None` when either number is zero (nothing can be assigned), or there
    /// would be more than [`MAX_PARTITIONS`] partitions or [`MAX_INSTANCES`]
    /// instances.
    pub fn new(partitions: u32, per_instance: u32) -> Option<Self> {
        if partitions == 0 || per_instance == 0 || partitions > MAX_PARTITIONS {
            return None;
        }
        let instances = partitions.div_ceil(per_instance);
        (instances <= MAX_INSTANCES).then_some(Layout {
            partitions,
            instances,
        })
    }

    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    pub fn instances(&self) -> u32 {
        self.instances
    }

    /// Partitions of `instance`, `None` when out of range.
    pub fn bucket(&self, instance: u32) -> Option<Range<u32>> {
        if instance >= self.instances {
            return None;
        }
        let small = self.partitions / self.instances;
        let large = self.partitions % self.instances;
        let start = instance * small + instance.min(large);
        let len = small + u32::from(instance < large);
        Some(start..start + len)
    }

    pub fn buckets(&self) -> impl Iterator<Item = Range<u32>> + '_ {
        (0..self.instances).filter_map(|i| self.bucket(i))
    }
}

/// The layout of `spec.numPartitions` over `spec.numPartitionsPerInstance`
/// (default 1), or which field is wrong and why: one message for the webhook,
/// the reconciler and `konsumer plan`.
pub fn layout_of(num_partitions: Option<i32>, per_instance: Option<i32>) -> Result<Layout, String> {
    let n = match num_partitions {
        None => return Err("spec.numPartitions is not set".into()),
        Some(n) if n < 1 => return Err(format!("spec.numPartitions is {n}, must be at least 1")),
        Some(n) if n as u32 > MAX_PARTITIONS => {
            return Err(format!(
                "spec.numPartitions is {n}: konsumer supports at most {MAX_PARTITIONS} partitions per Consumer"
            ));
        }
        Some(n) => n as u32,
    };
    let per = match per_instance {
        None => 1,
        Some(p) if p < 1 => {
            return Err(format!(
                "spec.numPartitionsPerInstance is {p}, must be at least 1"
            ));
        }
        Some(p) => p as u32,
    };
    Layout::new(n, per).ok_or_else(|| too_many_instances(n, per))
}

/// Why `n` partitions at `per` per instance are refused (too many instances).
pub fn too_many_instances(n: u32, per: u32) -> String {
    format!(
        "spec.numPartitionsPerInstance is {per}: {n} partitions make {} instances; konsumer supports at most \
         {MAX_INSTANCES} instances per Consumer (use at least {} partitions per instance)",
        n.div_ceil(per.max(1)),
        n.div_ceil(MAX_INSTANCES)
    )
}

/// `0,1,2`: the value of the partition env var and annotation.
pub fn join(range: Range<u32>) -> String {
    let mut out = String::with_capacity(range.len() * 4);
    for (i, p) in range.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(itoa::Buffer::new().format(p));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn buckets(n: u32, per: u32) -> Vec<Vec<u32>> {
        Layout::new(n, per)
            .map(|l| l.buckets().map(|r| r.collect()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn konsumerator_golden_splits() {
        assert_eq!(
            buckets(10, 3),
            vec![vec![0, 1, 2], vec![3, 4, 5], vec![6, 7], vec![8, 9]]
        );
        assert_eq!(
            buckets(9, 3),
            vec![vec![0, 1, 2], vec![3, 4, 5], vec![6, 7, 8]]
        );
        assert_eq!(
            buckets(10, 4),
            vec![vec![0, 1, 2, 3], vec![4, 5, 6], vec![7, 8, 9]]
        );
        assert_eq!(buckets(3, 5), vec![vec![0, 1, 2]]);
        assert_eq!(buckets(1, 1), vec![vec![0]]);
        assert_eq!(
            buckets(5, 1),
            vec![vec![0], vec![1], vec![2], vec![3], vec![4]]
        );
        assert!(buckets(0, 3).is_empty());
        assert!(buckets(10, 0).is_empty());
        assert!(Layout::new(MAX_PARTITIONS + 1, 10).is_none());
        assert!(Layout::new(MAX_PARTITIONS, 10).is_some());
        assert!(Layout::new(MAX_INSTANCES + 1, 1).is_none());
        assert!(Layout::new(MAX_INSTANCES, 1).is_some());
    }

    #[test]
    fn every_door_names_the_field_and_the_limit() {
        assert_eq!(
            layout_of(Some(10_001), Some(100)).unwrap_err(),
            "spec.numPartitions is 10001: konsumer supports at most 10000 partitions per Consumer"
        );
        let err = layout_of(Some(5000), Some(2)).unwrap_err();
        assert!(
            err.starts_with(
                "spec.numPartitionsPerInstance is 2: 5000 partitions make 2500 instances"
            ) && err.contains("use at least 5 partitions per instance"),
            "{err}"
        );
        assert_eq!(layout_of(Some(10_000), Some(10)).unwrap().instances(), 1000);
        assert!(layout_of(None, None).unwrap_err().contains("not set"));
    }

    #[test]
    fn out_of_range_instance_has_no_bucket() {
        let layout = Layout::new(10, 3).unwrap();
        assert_eq!(layout.instances(), 4);
        assert_eq!(layout.bucket(3), Some(8..10));
        assert_eq!(layout.bucket(4), None);
    }

    #[test]
    fn join_writes_comma_separated_partitions() {
        assert_eq!(join(6..8), "6,7");
        assert_eq!(join(0..1), "0");
    }

    proptest! {
        #[test]
        fn every_partition_in_exactly_one_bucket_and_sizes_differ_by_at_most_one(
            n in 1u32..5000, per in 5u32..300
        ) {
            let layout = Layout::new(n, per).unwrap();
            let buckets: Vec<Range<u32>> = layout.buckets().collect();
            prop_assert_eq!(buckets.len() as u32, n.div_ceil(per));
            let mut next = 0;
            for b in &buckets {
                prop_assert_eq!(b.start, next, "buckets are consecutive");
                prop_assert!(!b.is_empty());
                prop_assert!(b.len() as u32 <= per);
                next = b.end;
            }
            prop_assert_eq!(next, n, "every partition is covered");
            let max = buckets.iter().map(|b| b.len()).max().unwrap();
            let min = buckets.iter().map(|b| b.len()).min().unwrap();
            prop_assert!(max - min <= 1);
            // larger buckets come first
            let sizes: Vec<usize> = buckets.iter().map(|b| b.len()).collect();
            prop_assert!(sizes.windows(2).all(|w| w[0] >= w[1]));
        }
    }
}
