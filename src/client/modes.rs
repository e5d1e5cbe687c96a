//! Shared locks and semaphores in the library: preempts that carry a [`Claim`] (docs/design.md,
//! "Shared locks and semaphores"; docs/PROTOCOL.md, `mode` and `permits`).
//!
//! A claim is the `mode` a client holds the lock in (exclusive: alone; shared: beside other
//! shared holders) and, optionally, the `permits` it declares the lock to have (a semaphore of
//! N holders at most). Every holder gets its own fencing token from its own grant. The one
//! refusal a claim adds, `permits_mismatch`, comes back as an outcome
//! ([`Preempt::PermitsMismatch`], [`super::Acquire::PermitsMismatch`]), not as an error: like
//! `held_by`, it is the cluster's decision about the lock, and the seq that carried it is used.
//!
//! This file only adds entry points: the exchange, its retries and its terms are the
//! client's own (`super`).

use super::{Client, Credential, Error, Preempt};
use crate::net::protocol::{ErrorCode, WireOp};
use crate::node::{Claim, Outcome};

impl Client {
    /// Tries to take lock `name` under `claim`: [`Claim::EXCLUSIVE`] (what [`Client::preempt`]
    /// claims), [`Claim::SHARED`] (a reader: many hold the lock together, no writer beside
    /// them), or [`Claim::semaphore`]`(n)` (one of at most `n` holders).
    ///
    /// ```no_run
    /// use lockstep::client::{Claim, Client, ClientOptions, Preempt};
    /// let servers = vec!["127.0.0.1:7001".to_string()];
    /// let mut client = Client::new(servers, ClientOptions::default())?;
    /// match client.preempt_with("pool", Claim::semaphore(3))? {
    ///     Preempt::Granted { token } => println!("one of three, token {token}"),
    ///     Preempt::HeldBy { owner } => println!("all three permits taken (first: {})", owner.0),
    ///     Preempt::PermitsMismatch { permits } => println!("pool is in use with {permits:?}"),
    /// }
    /// # Ok::<(), lockstep::client::Error>(())
    /// ```
    ///
    /// Answers: [`Preempt::Granted`] with this holder's own token (a client that already
    /// holds the lock gets its existing token, whatever mode it asks for: no upgrade, no
    /// downgrade); [`Preempt::HeldBy`] when the claim does not fit beside the holders or others
    /// wait in the lock's line (a claim never jumps it), naming the earliest-granted holder;
    /// [`Preempt::PermitsMismatch`] when the lock is in use with other permits.
    ///
    /// Errors: permits outside `1..=`[`super::PERMITS_MAX`] are [`Error::InvalidInput`],
    /// refused before anything is sent; the rest as for [`Client::preempt`].
    pub fn preempt_with(&mut self, name: &str, claim: Claim) -> Result<Preempt, Error> {
        check_claim(claim)?;
        let op = |Credential { id, secret }, lock| WireOp::Preempt {
            client: id,
            secret: Some(secret),
            lock,
            claim,
        };
        match self.run(name, op) {
            Ok(Outcome::Granted { token }) => Ok(Preempt::Granted { token }),
            Ok(Outcome::HeldBy { owner }) => Ok(Preempt::HeldBy { owner }),
            Ok(other) => unreachable!("client: {other:?} was accepted as a preempt's answer"),
            Err(error) => permits_mismatch(&error)
                .map(|permits| Preempt::PermitsMismatch { permits })
                .ok_or(error),
        }
    }
}

/// Refuses, before anything is sent, a claim the cluster would answer `bad_request`.
pub(super) fn check_claim(claim: Claim) -> Result<(), Error> {
    if claim.permits_are_valid() {
        return Ok(());
    }
    Err(Error::InvalidInput(format!(
        "permits must be 1 to {}; got {}",
        super::PERMITS_MAX,
        claim.permits.unwrap_or_default()
    )))
}

/// The declared permits, if `error` is the cluster's `permits_mismatch` refusal.
pub(super) fn permits_mismatch(error: &Error) -> Option<Option<u32>> {
    match error {
        Error::Rejected {
            code: ErrorCode::PermitsMismatch { permits },
            ..
        } => Some(*permits),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_out_of_range_are_refused_before_anything_is_sent() {
        for permits in [0, super::super::PERMITS_MAX + 1] {
            let refused = check_claim(Claim::semaphore(permits));
            assert!(
                matches!(&refused, Err(Error::InvalidInput(text)) if text.contains("1 to 64")),
                "{permits}: {refused:?}"
            );
        }
        assert_eq!(check_claim(Claim::semaphore(64)), Ok(()));
        assert_eq!(check_claim(Claim::SHARED), Ok(()));
    }

    #[test]
    fn only_the_permits_mismatch_refusal_becomes_an_outcome() {
        let mismatch = Error::Rejected {
            code: ErrorCode::PermitsMismatch { permits: Some(2) },
            message: String::new(),
        };
        assert_eq!(permits_mismatch(&mismatch), Some(Some(2)));
        let reused = Error::Rejected {
            code: ErrorCode::SeqReused,
            message: String::new(),
        };
        assert_eq!(permits_mismatch(&reused), None);
    }
}
