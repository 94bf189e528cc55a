"""The object-store and Unity Catalog fields of the one settings model (`Settings` in
`workers/settings.py` inherits them): kept apart because they are read from the
providers' own variables as well as `PIDELTA_` ones."""

from __future__ import annotations

from pydantic import AliasChoices, BaseModel, Field, SecretStr


class ObjectStoreFields(BaseModel):
    """Object-store credentials: the providers' own variables, read here so that the one
    settings model stays the only reader of the environment (workers.lake.storage maps
    them to delta-rs storage options)."""

    aws_endpoint_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "PIDELTA_AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"
        ),
        description="S3-compatible endpoint (MinIO, moto, R2); http:// allows plain HTTP",
    )
    aws_region: str | None = Field(
        default=None,
        validation_alias=AliasChoices("PIDELTA_AWS_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"),
        description="S3 region",
    )
    aws_access_key_id: str | None = Field(
        default=None,
        validation_alias=AliasChoices("PIDELTA_AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
        description="S3 access key id",
    )
    aws_secret_access_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("PIDELTA_AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
        description="S3 secret key",
    )
    aws_session_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("PIDELTA_AWS_SESSION_TOKEN", "AWS_SESSION_TOKEN"),
        description="S3 session token",
    )
    aws_profile: str | None = Field(
        default=None,
        validation_alias=AliasChoices("PIDELTA_AWS_PROFILE", "AWS_PROFILE"),
        description="AWS profile name",
    )
    azure_storage_account_name: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "PIDELTA_AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_NAME"
        ),
        description="Azure account",
    )
    azure_storage_account_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "PIDELTA_AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_ACCOUNT_KEY"
        ),
        description="account key",
    )
    azure_storage_sas_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("PIDELTA_AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_SAS_TOKEN"),
        description="SAS token",
    )
    azure_client_id: str | None = Field(
        default=None,
        validation_alias=AliasChoices("PIDELTA_AZURE_CLIENT_ID", "AZURE_CLIENT_ID"),
        description="service principal id",
    )
    azure_client_secret: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("PIDELTA_AZURE_CLIENT_SECRET", "AZURE_CLIENT_SECRET"),
        description="principal secret",
    )
    azure_tenant_id: str | None = Field(
        default=None,
        validation_alias=AliasChoices("PIDELTA_AZURE_TENANT_ID", "AZURE_TENANT_ID"),
        description="Entra tenant id",
    )
    azure_storage_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices("PIDELTA_AZURE_STORAGE_ENDPOINT", "AZURE_STORAGE_ENDPOINT"),
        description="blob endpoint including the account (Azurite: http://127.0.0.1:10000/acct)",
    )
    azure_storage_use_emulator: bool = Field(
        default=False,
        validation_alias=AliasChoices(
            "PIDELTA_AZURE_STORAGE_USE_EMULATOR", "AZURE_STORAGE_USE_EMULATOR"
        ),
        description="talk to Azurite at its default loopback address",
    )
    google_application_credentials: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "PIDELTA_GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_APPLICATION_CREDENTIALS"
        ),
        description="path of a GCS service-account JSON file",
    )
    google_service_account_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "PIDELTA_GOOGLE_SERVICE_ACCOUNT_KEY", "GOOGLE_SERVICE_ACCOUNT_KEY"
        ),
        description="GCS service-account JSON itself",
    )


class UnityCatalogFields(BaseModel):
    """Unity Catalog (PIDELTA_TARGET=uc://catalog.schema)."""

    uc_storage_root: str | None = Field(
        default=None,
        description="cloud folder under which pidelta creates missing EXTERNAL tables "
        "(<root>/<table>), e.g. s3://bucket/pidelta",
    )
    databricks_host: str | None = Field(
        default=None,
        validation_alias=AliasChoices("PIDELTA_DATABRICKS_HOST", "DATABRICKS_HOST"),
        description="workspace URL serving /api/2.1/unity-catalog",
    )
    databricks_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("PIDELTA_DATABRICKS_TOKEN", "DATABRICKS_TOKEN"),
        description="personal access token",
    )
    databricks_client_id: str | None = Field(
        default=None,
        validation_alias=AliasChoices("PIDELTA_DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_ID"),
        description="service principal for OAuth machine-to-machine",
    )
    databricks_client_secret: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "PIDELTA_DATABRICKS_CLIENT_SECRET", "DATABRICKS_CLIENT_SECRET"
        ),
        description="OAuth M2M secret",
    )
    uc_request_timeout: float = Field(
        default=30.0, gt=0, description="seconds per Unity Catalog REST call"
    )
    credential_renew_margin: float = Field(
        default=300.0,
        gt=0,
        description="renew vended credentials this many seconds before they expire (capped "
        "at a third of their lifetime)",
    )
