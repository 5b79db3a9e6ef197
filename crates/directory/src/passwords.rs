//! Passwords, hashed with Argon2id.

use argon2::password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::DirectoryError;

/// How passwords are hashed and what they must look like.
#[derive(Clone, Copy, Debug)]
pub struct PasswordPolicy {
    /// Argon2id memory in KiB.
    pub memory_kib: u32,
    /// Argon2id passes.
    pub iterations: u32,
    /// Shortest password accepted.
    pub length_min: usize,
}

impl PasswordPolicy {
    /// OWASP's Argon2id baseline: 19 MiB, 2 passes.
    pub const PRODUCTION: PasswordPolicy = PasswordPolicy { memory_kib: 19 * 1024, iterations: 2, length_min: 8 };
    /// Cheap parameters for tests and simulations only.
    pub const FAST_INSECURE: PasswordPolicy = PasswordPolicy { memory_kib: 64, iterations: 1, length_min: 8 };

    fn argon2(&self) -> Result<Argon2<'static>, DirectoryError> {
        let params = Params::new(self.memory_kib, self.iterations, 1, None)
            .map_err(|e| DirectoryError::Storage(format!("argon2 parameters: {e}")))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }

    /// Checks the password's shape, then hashes it (PHC string).
    pub fn hash(&self, password: &str) -> Result<String, DirectoryError> {
        if password.chars().count() < self.length_min {
            return Err(DirectoryError::InvalidField {
                field: "password",
                message: format!("must have at least {} characters", self.length_min),
            });
        }
        let hash = self
            .argon2()?
            .hash_password(password.as_bytes())
            .map_err(|e| DirectoryError::Storage(format!("argon2: {e}")))?;
        Ok(hash.to_string())
    }

    /// Whether `password` matches the stored hash (whatever parameters it was made with).
    pub fn verify(&self, password: &str, stored: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(stored) else { return false };
        Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_short_passwords_are_refused() {
        let policy = PasswordPolicy::FAST_INSECURE;
        let hash = policy.hash("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(policy.verify("correct horse", &hash));
        assert!(!policy.verify("correct horsf", &hash));
        assert!(!policy.verify("x", "not a hash"));
        assert!(policy.hash("short").is_err());
    }
}
