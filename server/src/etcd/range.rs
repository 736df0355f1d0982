//! etcd's Range semantics (sorting, revision filters, limits) over the MVCC key space, for
//! reads served from a snapshot and for ranges inside a transaction alike.

use crate::member::keyspace;
use crate::mvcc::{KeyValue, RangeOpts, RangeResult, Result};
use crate::pb::etcdserverpb::{RangeRequest, RangeResponse, range_request};
use crate::pb::mvccpb;

/// Converts a stored version to its wire form.
pub fn to_pb(kv: KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

/// Runs `r` through `read` (which reads `[key, end)` of the key space with the given options),
/// never past etcd's part of the key space. The header is left for the caller.
pub fn range(
    r: &RangeRequest,
    read: impl FnOnce(&[u8], &[u8], RangeOpts) -> Result<RangeResult>,
) -> Result<RangeResponse> {
    use range_request::{SortOrder, SortTarget};
    let order = SortOrder::try_from(r.sort_order).unwrap_or(SortOrder::None);
    let target = SortTarget::try_from(r.sort_target).unwrap_or(SortTarget::Key);
    let order = match (order, target) {
        (SortOrder::None, SortTarget::Key) => SortOrder::None,
        (SortOrder::None, _) => SortOrder::Ascend,
        // Keys come out ascending already.
        (SortOrder::Ascend, SortTarget::Key) => SortOrder::None,
        (o, _) => o,
    };
    let filtered = r.min_mod_revision != 0
        || r.max_mod_revision != 0
        || r.min_create_revision != 0
        || r.max_create_revision != 0;
    let limit = r.limit.max(0) as usize;
    let opts = RangeOpts {
        revision: r.revision,
        // Sorting and filtering need every match before the limit applies.
        limit: if order != SortOrder::None || filtered {
            0
        } else {
            limit
        },
        keys_only: r.keys_only,
        count_only: r.count_only,
        bytes_max: 0,
    };
    let res = match keyspace::clamp_end(&r.key, &r.range_end) {
        Some(end) => read(&r.key, end, opts)?,
        None => RangeResult::default(),
    };
    let mut kvs = res.kvs;
    let mut more = res.more;
    if filtered {
        kvs.retain(|kv| {
            (r.min_mod_revision == 0 || kv.mod_revision >= r.min_mod_revision)
                && (r.max_mod_revision == 0 || kv.mod_revision <= r.max_mod_revision)
                && (r.min_create_revision == 0 || kv.create_revision >= r.min_create_revision)
                && (r.max_create_revision == 0 || kv.create_revision <= r.max_create_revision)
        });
    }
    if order != SortOrder::None {
        let by = |a: &KeyValue, b: &KeyValue| match target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.create_revision.cmp(&b.create_revision),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        };
        // A stable sort either way: equal entries stay in key order, as etcd returns them.
        if order == SortOrder::Descend {
            kvs.sort_by(|a, b| by(b, a));
        } else {
            kvs.sort_by(by);
        }
    }
    if limit > 0 && kvs.len() > limit {
        kvs.truncate(limit);
        more = true;
    }
    Ok(RangeResponse {
        header: None,
        kvs: kvs.into_iter().map(to_pb).collect(),
        more,
        count: res.count as i64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use range_request::{SortOrder, SortTarget};

    fn kv(key: &str, version: i64) -> KeyValue {
        KeyValue {
            key: key.as_bytes().to_vec(),
            version,
            ..KeyValue::default()
        }
    }

    fn sorted(order: SortOrder, target: SortTarget, limit: i64) -> Vec<String> {
        let r = RangeRequest {
            sort_order: order as i32,
            sort_target: target as i32,
            limit,
            ..RangeRequest::default()
        };
        let all = vec![kv("a", 2), kv("b", 1), kv("c", 1), kv("d", 3)];
        let resp = range(&r, |_, _, _| {
            Ok(RangeResult {
                count: all.len(),
                kvs: all,
                more: false,
            })
        })
        .unwrap();
        resp.kvs
            .into_iter()
            .map(|kv| String::from_utf8(kv.key).unwrap())
            .collect()
    }

    #[test]
    fn equal_sort_values_stay_in_key_order_both_ways() {
        use SortOrder::{Ascend, Descend};
        assert_eq!(
            sorted(Descend, SortTarget::Version, 0),
            ["d", "a", "b", "c"]
        );
        assert_eq!(sorted(Ascend, SortTarget::Version, 0), ["b", "c", "a", "d"]);
        assert_eq!(sorted(Descend, SortTarget::Key, 2), ["d", "c"]);
        assert_eq!(sorted(Descend, SortTarget::Version, 3), ["d", "a", "b"]);
    }
}
