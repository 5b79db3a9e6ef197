//! `citypay admin`: what only the command line does, such as creating the first platform
//! operator. It opens the database as its writer, so run it while the server is stopped.


use citypay_directory::Role;

/// Administrative commands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Admin {
    /// Creates an operator; the password comes from CITYPAY_OPERATOR_PASSWORD or stdin.
    CreateOperator {
        #[command(flatten)]
        city_db: crate::city::CityArgs,
        /// Sign-in name.
        #[arg(long)]
        username: String,
        /// `platform` or `city`.
        #[arg(long, default_value = "platform")]
        role: String,
        /// The city of a city operator (GB/T 2260 code).
        #[arg(long)]
        city: Option<u32>,
    },
    /// Onboards a city (GB/T 2260 code and name).
    OnboardCity {
        #[command(flatten)]
        city_db: crate::city::CityArgs,
        /// GB/T 2260 code, e.g. 330100.
        #[arg(long)]
        code: u32,
        /// Name, e.g. Hangzhou.
        #[arg(long)]
        name: String,
    },
    /// Sets a merchant category's fee rate (payments from now on pay it); without --rate-bp,
    /// lists every category's rate.
    FeeRate {
        #[command(flatten)]
        city_db: crate::city::CityArgs,
        /// retail, restaurant, transit, hospital, school, social_security, utility or other.
        #[arg(long)]
        category: Option<String>,
        /// Basis points of each payment (60 is 0.6%); at most 1,000.
        #[arg(long, requires = "category")]
        rate_bp: Option<u32>,
    },
}

fn password() -> anyhow::Result<String> {
    if let Ok(password) = std::env::var("CITYPAY_OPERATOR_PASSWORD") {
        return Ok(password);
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

pub(crate) fn run(command: &Admin) -> anyhow::Result<()> {
    match command {
        Admin::CreateOperator { city_db, username, role, city } => {
            let role = Role::from_code(role).ok_or_else(|| anyhow::anyhow!("role must be platform or city"))?;
            let password = password()?;
            city_db.with_city(async |city_state| {
                let operator = city_state.state.directory.create_operator(username, &password, role, *city).await?;
                say!("operator {} ({}) created", operator.username, operator.role.code())?;
                Ok(())
            })
        }
        Admin::FeeRate { city_db, category, rate_bp } => city_db.with_city(async |city| {
            let directory = &city.state.directory;
            if let (Some(category), Some(rate)) = (category, rate_bp) {
                let category = citypay_directory::Category::from_code(category).ok_or_else(|| anyhow::anyhow!("unknown category {category}"))?;
                directory.set_fee_rate(category, *rate).await?;
            }
            for (category, rate) in directory.fee_rates().await? {
                say!("{}: {rate} bp", category.code())?;
            }
            Ok(())
        }),
        Admin::OnboardCity { city_db, code, name } => city_db.with_city(async |city_state| {
            let city = city_state.state.directory.onboard_city(*code, name).await?;
            say!("city {} ({}) onboarded", city.name, city.code)?;
            Ok(())
        }),
    }
}
