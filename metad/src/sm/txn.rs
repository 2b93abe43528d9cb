//! Transactions: compares then namespace/tag operations, all or nothing. OWNER: namespace work.
//!
//! Like etcd: every compare is evaluated against the state before the transaction; if all hold,
//! `then_ops` run in order, otherwise `else_ops` (possibly none). The steps share one revision
//! and one overlay, so a refusal in any step refuses the whole transaction and changes nothing.

use std::cmp::Ordering;

use metad_proto::v1::{
    txn_step, txn_step_result, Compare, CompareOp, CompareTarget, TxnOp, TxnReply, TxnStep,
    TxnStepResult,
};

use super::kv::{KvRead, KvWrite};
use super::model::{parse_path, resolve, ApplyCtx, ApplyError, OpResult, Refusal};
use super::namespace;
use metad_proto::ErrorCode;

/// Most compares in one transaction.
pub const TXN_COMPARES_MAX: usize = 128;
/// Most steps in each of `then_ops` and `else_ops`.
pub const TXN_OPS_MAX: usize = 128;

fn validate_compare(c: &Compare, f: &str) -> Result<(), Refusal> {
    parse_path(&format!("{f}.path"), &c.path)?;
    let target = CompareTarget::try_from(c.target)
        .ok()
        .filter(|t| *t != CompareTarget::Unspecified)
        .ok_or_else(|| Refusal::invalid(format!("{f}.target: required (got {})", c.target)))?;
    let op = CompareOp::try_from(c.op)
        .ok()
        .filter(|o| *o != CompareOp::Unspecified)
        .ok_or_else(|| Refusal::invalid(format!("{f}.op: required (got {})", c.op)))?;
    let ordered = matches!(op, CompareOp::Less | CompareOp::Greater);
    if ordered && matches!(target, CompareTarget::Exists | CompareTarget::Kind) {
        return Err(Refusal::invalid(format!(
            "{f}.op: only EQUAL and NOT_EQUAL are meaningful for {}",
            target.as_str_name()
        )));
    }
    if target == CompareTarget::Tag && c.tag_key.is_empty() {
        return Err(Refusal::invalid(format!(
            "{f}.tag_key: required for a TAG compare"
        )));
    }
    Ok(())
}

fn validate_steps(steps: &[TxnStep], list: &str) -> Result<(), Refusal> {
    if steps.len() > TXN_OPS_MAX {
        return Err(Refusal::invalid(format!(
            "{list}: {} operations, the limit is {TXN_OPS_MAX}",
            steps.len()
        )));
    }
    for (i, s) in steps.iter().enumerate() {
        match &s.op {
            None => return Err(Refusal::invalid(format!("{list}[{i}].op: missing"))),
            Some(txn_step::Op::Namespace(n)) => {
                namespace::validate(n, &format!("{list}[{i}].namespace."))?
            }
            // Tag operations validate their own fields in `tags::apply`.
            Some(txn_step::Op::Tag(_)) => {}
        }
    }
    Ok(())
}

/// Checks every field rule that does not depend on state (run by the API and by apply).
pub fn validate(op: &TxnOp) -> Result<(), Refusal> {
    if op.compares.len() > TXN_COMPARES_MAX {
        return Err(Refusal::invalid(format!(
            "compares: {} compares, the limit is {TXN_COMPARES_MAX}",
            op.compares.len()
        )));
    }
    for (i, c) in op.compares.iter().enumerate() {
        validate_compare(c, &format!("compares[{i}]"))?;
    }
    validate_steps(&op.then_ops, "then_ops")?;
    validate_steps(&op.else_ops, "else_ops")
}

fn ordered(op: CompareOp, ord: Ordering) -> bool {
    match op {
        CompareOp::Equal => ord == Ordering::Equal,
        CompareOp::NotEqual => ord != Ordering::Equal,
        CompareOp::Less => ord == Ordering::Less,
        CompareOp::Greater => ord == Ordering::Greater,
        CompareOp::Unspecified => false,
    }
}

/// Evaluates one (validated) compare against the current state.
pub fn compare_holds(kv: &impl KvRead, c: &Compare, f: &str) -> OpResult<bool> {
    let obj = match resolve(kv, &format!("{f}.path"), &c.path) {
        Ok(o) => o,
        // A path through a non-directory does not exist.
        Err(ApplyError::Refused(r)) if r.code == ErrorCode::FailedPrecondition => None,
        Err(e) => return Err(e),
    };
    let op = CompareOp::try_from(c.op).unwrap_or(CompareOp::Unspecified);
    let target = CompareTarget::try_from(c.target).unwrap_or(CompareTarget::Unspecified);
    let num = |v: u64| ordered(op, v.cmp(&c.number));
    Ok(match target {
        CompareTarget::Unspecified => false,
        CompareTarget::Exists => ordered(op, obj.is_some().cmp(&c.exists)),
        CompareTarget::Kind => ordered(op, obj.as_ref().map(|i| i.kind).unwrap_or(0).cmp(&c.kind)),
        CompareTarget::ModRevision => num(obj.as_ref().map(|i| i.mod_revision).unwrap_or(0)),
        CompareTarget::CreateRevision => num(obj.as_ref().map(|i| i.create_revision).unwrap_or(0)),
        CompareTarget::ContentGen => num(obj.as_ref().map(|i| i.content_gen).unwrap_or(0)),
        CompareTarget::Tag => {
            let value = match &obj {
                Some(i) => super::tags::own_tag_value(kv, i.ino, &c.tag_key)?,
                None => None,
            };
            match value {
                Some(v) => ordered(op, v.as_str().cmp(c.tag_value.as_str())),
                None => op == CompareOp::NotEqual,
            }
        }
    })
}

fn prefixed(e: ApplyError, prefix: &str) -> ApplyError {
    match e {
        ApplyError::Refused(r) => {
            ApplyError::Refused(Refusal::new(r.code, format!("{prefix}: {}", r.message)))
        }
        other => other,
    }
}

/// Applies one transaction (from the log).
pub fn apply(kv: &mut impl KvWrite, ctx: &mut ApplyCtx, op: &TxnOp) -> OpResult<TxnReply> {
    validate(op)?;
    let mut succeeded = true;
    for (i, c) in op.compares.iter().enumerate() {
        if !compare_holds(kv, c, &format!("compares[{i}]"))? {
            succeeded = false;
            break;
        }
    }
    let (steps, list) = if succeeded {
        (&op.then_ops, "then_ops")
    } else {
        (&op.else_ops, "else_ops")
    };
    let mut results = Vec::with_capacity(steps.len());
    for (i, s) in steps.iter().enumerate() {
        let result = match &s.op {
            None => return Err(Refusal::invalid(format!("{list}[{i}].op: missing")).into()),
            Some(txn_step::Op::Namespace(n)) => txn_step_result::Result::Namespace(
                namespace::apply_in(kv, ctx, n, &format!("{list}[{i}].namespace."))?,
            ),
            Some(txn_step::Op::Tag(t)) => txn_step_result::Result::Tag(
                super::tags::apply(kv, ctx, t)
                    .map_err(|e| prefixed(e, &format!("{list}[{i}].tag")))?,
            ),
        };
        results.push(TxnStepResult {
            result: Some(result),
        });
    }
    Ok(TxnReply { succeeded, results })
}
