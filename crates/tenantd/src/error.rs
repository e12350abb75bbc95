//! The one mapping from the libraries' errors to problem+json answers.
use axum::response::{IntoResponse, Response};
use tenantd_core::Code;
use tenantd_edge::Problem;
use tenantd_store::StoreError;

/// A handler's error.
#[derive(Debug)]
pub struct ApiError(pub Problem);

/// Handler result.
pub type ApiResult<T> = Result<T, ApiError>;

impl From<Problem> for ApiError {
    fn from(p: Problem) -> Self {
        Self(p)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self(match e {
            StoreError::NotFound("tenant") => Problem::new(Code::TenantNotFound, "tenant not found"),
            StoreError::NotFound(what) => Problem::not_found(what),
            StoreError::Conflict(m) => Problem::new(Code::Conflict, m),
            StoreError::LastOwner => Problem::new(
                Code::LastOwner,
                "a tenant must keep at least one owner: add another owner first",
            ),
            StoreError::Invalid(m) => Problem::invalid(m),
            StoreError::Status(s) => Problem::new(Code::Conflict, s.to_string()),
            StoreError::Db(e) if unstorable_text(&e) => unstorable(),
            other => {
                // The cause chain goes to the log (with the request id from the span),
                // never to the client.
                tracing::error!(error = %other, "storage failure");
                Problem::internal()
            }
        })
    }
}

/// Whether the database refused text it cannot hold (PostgreSQL: a NUL, or bytes its
/// encoding has no character for). Requests are checked for NULs first; this is the
/// backstop, so such input is a `400` on every backend, never a `500`.
pub fn unstorable_text(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if matches!(d.code().as_deref(), Some("22021" | "22P05")))
}

/// The answer to text the database cannot hold.
pub fn unstorable() -> Problem {
    Problem::invalid("the request holds text that cannot be stored (a NUL character)")
}

impl From<crate::keyring::KeyringError> for ApiError {
    fn from(e: crate::keyring::KeyringError) -> Self {
        use crate::keyring::KeyringError;
        match e {
            KeyringError::Store(e) => e.into(),
            other => Self(undecryptable(other)),
        }
    }
}

/// A tenant's value that did not decrypt: a clear `500`, logged. Never another tenant's
/// data, never a panic: the value stays sealed.
fn undecryptable(e: impl std::fmt::Display) -> Problem {
    tracing::error!(error = %e, "a tenant's stored value did not decrypt");
    Problem::new(
        Code::Internal,
        format!("a stored value of this tenant could not be decrypted: {e}"),
    )
}

impl From<tenantd_core::IdError> for ApiError {
    fn from(e: tenantd_core::IdError) -> Self {
        Self(match e {
            tenantd_core::IdError::TenantId(_) => Problem::new(Code::InvalidTenantId, e.to_string()),
            other => Problem::invalid(other.to_string()),
        })
    }
}

impl From<tenantd_data::DataError> for ApiError {
    fn from(e: tenantd_data::DataError) -> Self {
        use tenantd_data::DataError;
        Self(match e {
            DataError::Invalid(m) => Problem::invalid(m),
            DataError::Db(e) if unstorable_text(&e) => unstorable(),
            DataError::Moving => {
                let mut p = Problem::new(Code::Unavailable, DataError::Moving.to_string());
                p.headers.push((http::header::RETRY_AFTER, http::HeaderValue::from(5)));
                p
            }
            DataError::Sealed(m) => undecryptable(m),
            other => {
                tracing::error!(error = %other, "tenant data failure");
                Problem::internal()
            }
        })
    }
}

impl From<tenantd_jobs::JobError> for ApiError {
    fn from(e: tenantd_jobs::JobError) -> Self {
        use tenantd_jobs::JobError;
        match e {
            JobError::NotFound => Self(Problem::not_found("job")),
            JobError::NotHeld(_) | JobError::Conflict(_) => Self(Problem::new(Code::Conflict, e.to_string())),
            JobError::Invalid(m) => Self(Problem::invalid(m)),
            JobError::Store(e) => e.into(),
            JobError::Db(e) => tenantd_store::StoreError::Db(e).into(),
            JobError::Corrupt(e) => tenantd_store::StoreError::Corrupt(e).into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.0.into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_held_too_long_by_a_tier_move_is_503_with_retry_after() {
        let p = ApiError::from(tenantd_data::DataError::Moving).0;
        assert_eq!(p.code.status(), 503);
        assert_eq!(p.headers, [(http::header::RETRY_AFTER, http::HeaderValue::from(5))]);
        assert_eq!(
            ApiError::from(tenantd_data::DataError::Invalid("bad".into()))
                .0
                .code
                .status(),
            400
        );
        assert_eq!(ApiError::from(tenantd_data::DataError::NotPlaced).0.code.status(), 500);
    }
}
