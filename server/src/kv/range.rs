//! etcd's Range semantics (sorting, revision filters, limits) over the MVCC key space, for
//! reads served from a snapshot and for ranges inside a transaction alike.

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

/// Runs `r` through `read` (which reads the key space with the given options). The header is
/// left for the caller.
pub fn range(
    r: &RangeRequest,
    read: impl FnOnce(RangeOpts) -> Result<RangeResult>,
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
    };
    let res = read(opts)?;
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
        match target {
            SortTarget::Key => kvs.sort_by(|a, b| a.key.cmp(&b.key)),
            SortTarget::Version => kvs.sort_by_key(|kv| kv.version),
            SortTarget::Create => kvs.sort_by_key(|kv| kv.create_revision),
            SortTarget::Mod => kvs.sort_by_key(|kv| kv.mod_revision),
            SortTarget::Value => kvs.sort_by(|a, b| a.value.cmp(&b.value)),
        }
        if order == SortOrder::Descend {
            kvs.reverse();
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
