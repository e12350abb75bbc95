//! The stable error codes (docs/api.md), with their HTTP status and title.

/// A stable, snake_case error code carried in every problem+json body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// 400: the body is not valid JSON or misses a field.
    InvalidRequest,
    /// 400: a tenant id outside the grammar, or reserved.
    InvalidTenantId,
    /// 400: the request needs a tenant and none was given.
    TenantRequired,
    /// 400: a configuration value its key's schema refuses.
    InvalidConfig,
    /// 401: no valid credential.
    Unauthenticated,
    /// 403: the principal's role does not grant the permission.
    Forbidden,
    /// 403: sources disagree, or the principal does not belong to the tenant.
    TenantMismatch,
    /// 403: the tenant is suspended.
    TenantSuspended,
    /// 404: no such tenant (or deleted, for non-operators).
    TenantNotFound,
    /// 404: no such resource or route.
    NotFound,
    /// 405: the route exists but not with this method.
    MethodNotAllowed,
    /// 409: the request conflicts with the current state.
    Conflict,
    /// 409: the change would leave the tenant without an owner.
    LastOwner,
    /// 413: the body is larger than allowed.
    PayloadTooLarge,
    /// 414: the request line's target is too long (raised by the HTTP layer).
    UriTooLong,
    /// 431: the request head is too large, or has too many headers (the HTTP layer).
    HeadersTooLarge,
    /// 429: a quota is used up.
    QuotaExceeded,
    /// 429: a rate limit applies.
    RateLimited,
    /// 500: something unexpected; the log has the cause under the same request id.
    Internal,
    /// 502: the upstream refused the connection.
    UpstreamUnavailable,
    /// 503: a dependency (database, Redis) is unavailable.
    Unavailable,
    /// 504: the upstream did not answer in time.
    UpstreamTimeout,
    /// 505: an HTTP version other than 1.0 and 1.1 on an HTTP/1 listener.
    HttpVersionNotSupported,
}

impl Code {
    /// Every code.
    pub const ALL: [Code; 23] = {
        use Code::*;
        [
            InvalidRequest,
            InvalidTenantId,
            TenantRequired,
            InvalidConfig,
            Unauthenticated,
            Forbidden,
            TenantMismatch,
            TenantSuspended,
            TenantNotFound,
            NotFound,
            MethodNotAllowed,
            Conflict,
            LastOwner,
            PayloadTooLarge,
            UriTooLong,
            HeadersTooLarge,
            QuotaExceeded,
            RateLimited,
            Internal,
            UpstreamUnavailable,
            Unavailable,
            UpstreamTimeout,
            HttpVersionNotSupported,
        ]
    };

    /// The code a body's `code` member names.
    pub fn parse(code: &str) -> Option<Code> {
        Self::ALL.into_iter().find(|c| c.as_str() == code)
    }

    /// The HTTP status code.
    pub fn status(self) -> u16 {
        use Code::*;
        match self {
            InvalidRequest | InvalidTenantId | TenantRequired | InvalidConfig => 400,
            Unauthenticated => 401,
            Forbidden | TenantMismatch | TenantSuspended => 403,
            TenantNotFound | NotFound => 404,
            MethodNotAllowed => 405,
            Conflict | LastOwner => 409,
            PayloadTooLarge => 413,
            UriTooLong => 414,
            HeadersTooLarge => 431,
            QuotaExceeded | RateLimited => 429,
            Internal => 500,
            UpstreamUnavailable => 502,
            Unavailable => 503,
            UpstreamTimeout => 504,
            HttpVersionNotSupported => 505,
        }
    }

    /// The code as it appears in the body.
    pub fn as_str(self) -> &'static str {
        use Code::*;
        match self {
            InvalidRequest => "invalid_request",
            InvalidTenantId => "invalid_tenant_id",
            TenantRequired => "tenant_required",
            InvalidConfig => "invalid_config",
            Unauthenticated => "unauthenticated",
            Forbidden => "forbidden",
            TenantMismatch => "tenant_mismatch",
            TenantSuspended => "tenant_suspended",
            TenantNotFound => "tenant_not_found",
            NotFound => "not_found",
            MethodNotAllowed => "method_not_allowed",
            Conflict => "conflict",
            LastOwner => "last_owner",
            PayloadTooLarge => "payload_too_large",
            UriTooLong => "uri_too_long",
            HeadersTooLarge => "headers_too_large",
            QuotaExceeded => "quota_exceeded",
            RateLimited => "rate_limited",
            Internal => "internal",
            UpstreamUnavailable => "upstream_unavailable",
            Unavailable => "unavailable",
            UpstreamTimeout => "upstream_timeout",
            HttpVersionNotSupported => "http_version_not_supported",
        }
    }

    /// A short human title (the problem's `title`).
    pub fn title(self) -> &'static str {
        use Code::*;
        match self {
            InvalidRequest => "Invalid request",
            InvalidTenantId => "Invalid tenant id",
            TenantRequired => "Tenant required",
            InvalidConfig => "Invalid configuration value",
            Unauthenticated => "Unauthenticated",
            Forbidden => "Forbidden",
            TenantMismatch => "Tenant mismatch",
            TenantSuspended => "Tenant suspended",
            TenantNotFound => "Tenant not found",
            NotFound => "Not found",
            MethodNotAllowed => "Method not allowed",
            Conflict => "Conflict",
            LastOwner => "Last owner",
            PayloadTooLarge => "Payload too large",
            UriTooLong => "URI too long",
            HeadersTooLarge => "Request headers too large",
            QuotaExceeded => "Quota exceeded",
            RateLimited => "Rate limited",
            Internal => "Internal error",
            UpstreamUnavailable => "Upstream unavailable",
            Unavailable => "Service unavailable",
            UpstreamTimeout => "Upstream timeout",
            HttpVersionNotSupported => "HTTP version not supported",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Code;

    #[test]
    fn every_code_parses_back() {
        for c in Code::ALL {
            assert_eq!(Code::parse(c.as_str()), Some(c));
        }
        let distinct: std::collections::HashSet<_> = Code::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(distinct.len(), Code::ALL.len());
        assert_eq!(Code::parse("teapot"), None);
    }
}
