//! Platform and city operators.

use citypay_shard::{Command, Guard};
use citypay_store::{OnConflict, ServiceRow, Value};

use crate::sessions::SignedIn;
use crate::sign_in_limits::SignInFrom;
use crate::tokens::Principal;
use crate::{Directory, DirectoryError, int, text};

/// What an operator may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Runs the platform: onboards cities and merchants, sees every city.
    PlatformOperator,
    /// Watches and onboards one city.
    CityOperator,
}

impl Role {
    /// Stable text code.
    pub const fn code(self) -> &'static str {
        match self {
            Role::PlatformOperator => "platform",
            Role::CityOperator => "city",
        }
    }

    /// Inverse of [`Role::code`].
    pub fn from_code(code: &str) -> Option<Role> {
        match code {
            "platform" => Some(Role::PlatformOperator),
            "city" => Some(Role::CityOperator),
            _ => None,
        }
    }
}

/// An operator account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operator {
    /// Operator id.
    pub id: u64,
    /// Sign-in name.
    pub username: String,
    /// Role.
    pub role: Role,
    /// The city of a city operator.
    pub city: Option<u32>,
}

impl Directory {
    /// Creates an operator. A city operator needs an onboarded city.
    pub async fn create_operator(
        &self,
        username: &str,
        password: &str,
        role: Role,
        city: Option<u32>,
    ) -> Result<Operator, DirectoryError> {
        let username = username.trim();
        if username.is_empty() || username.len() > 64 || !username.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
            return Err(DirectoryError::InvalidField { field: "username", message: "1 to 64 letters, digits, '.', '_' or '-'".into() });
        }
        let city = match (role, city) {
            (Role::CityOperator, Some(code)) => Some(self.city(code).await?.code),
            (Role::CityOperator, None) => {
                return Err(DirectoryError::InvalidField { field: "city", message: "a city operator needs a city".into() });
            }
            (Role::PlatformOperator, _) => None,
        };
        let hash = self.passwords.hash(password)?;
        let id = self.entity_id(&["operator", username]);
        let row = ServiceRow {
            table: "operators",
            key: vec![("id", Value::Int(i64::try_from(id).unwrap_or(i64::MAX)))],
            columns: vec![
                ("username", Value::Text(username.to_owned())),
                ("role", Value::Text(role.code().to_owned())),
                ("city_code", city.map_or(Value::Null, |c| Value::Int(i64::from(c)))),
                ("password_hash", Value::Text(hash)),
                ("created_at", Value::Int(i64::try_from(self.now().unix_seconds()).unwrap_or(0))),
            ],
            on_conflict: OnConflict::Fail,
        };
        let command = Command {
            event: None,
            guards: vec![Guard::Absent { table: "operators", key: vec![("username", Value::Text(username.to_owned()))] }],
            rows: vec![row],
            always_rows: Vec::new(),
        };
        match self.submit(command).await? {
            Ok(_) => Ok(Operator { id, username: username.to_owned(), role, city }),
            Err(_) => Err(DirectoryError::UsernameTaken),
        }
    }

    /// Signs an operator in, under the sign-in limits: a new session whose token is valid
    /// `ttl_s` seconds.
    pub async fn sign_in_operator(&self, username: &str, password: &str, ttl_s: u64, from: &SignInFrom) -> Result<(Operator, SignedIn), DirectoryError> {
        let username = username.trim();
        let rows = self.read("SELECT id, role, city_code, password_hash FROM operators WHERE username = ?1", vec![Value::Text(username.to_owned())]).await?;
        let stored = rows.first().map(|row| text(&row[3])).transpose()?;
        let ticket = self.password_checked(&format!("operator:{username}"), from, stored.as_deref(), password).await?;
        let row = rows.first().ok_or(DirectoryError::WrongCredentials)?;
        let role = Role::from_code(&text(&row[1])?).ok_or_else(|| DirectoryError::Storage("operator role".into()))?;
        let city = match &row[2] {
            Value::Null => None,
            v => Some(u32::try_from(int(v)?).map_err(|_| DirectoryError::Storage("city code".into()))?),
        };
        let id = u64::try_from(int(&row[0])?).map_err(|_| DirectoryError::Storage("operator id".into()))?;
        let operator = Operator { id, username: username.to_owned(), role, city };
        let (session, token) = self.open_session(Principal::Operator { id, role, city }, ttl_s).await?;
        tracing::debug!(operator = id, role = role.code(), "operator signed in");
        Ok((operator, SignedIn { token, session, ticket }))
    }
}
