"""What differs between stages (keyword-only props set in `app.py`) and the endpoints a team keeps as code."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contracts.names import NAME_PATTERN as NAME
from contracts.names import package_group


class EndpointAsCode(BaseModel):
    """An endpoint a team keeps in the serving stack: model package versions of one group, pinned.

    The defaults are the deployer's (`serving.deployer.DeploymentConfig`), so an endpoint as code and one the
    release flow makes behave alike; a test keeps them equal."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = Field(pattern=NAME, description="the endpoint's name; not a name the release flow manages")
    model: str = Field(pattern=NAME, description="the registered model: its model package group")
    production: int = Field(ge=1, description="the model package version serving all traffic")
    shadow: int | None = Field(None, ge=1, description="a version that gets a copy of every request, answers no one")
    instance_type: str = "ml.g5.xlarge"
    instance_count: int = Field(1, ge=1)
    shadow_sampling_percent: float = Field(100.0, gt=0, le=100)
    canary_percent: int = Field(10, ge=1, le=50)
    wait_seconds: int = Field(300, ge=0, le=3600)
    bake_seconds: int = Field(600, ge=0, le=3600)
    max_execution_seconds: int = Field(7200, ge=600, le=28800)
    capture_sampling_percent: int = Field(100, ge=0, le=100)
    min_capacity: int = Field(1, ge=1)
    max_capacity: int = Field(2, ge=1)
    invocations_per_instance: float = Field(50.0, gt=0)
    scale_in_cooldown_s: int = Field(300, ge=0)
    scale_out_cooldown_s: int = Field(60, ge=0)

    @model_validator(mode="after")
    def _coherent(self) -> EndpointAsCode:
        if self.shadow == self.production:
            raise ValueError(f"endpoint {self.name}: the shadow version is the production version ({self.production})")
        if self.max_capacity < self.min_capacity:
            raise ValueError(f"endpoint {self.name}: max_capacity {self.max_capacity} < min_capacity {self.min_capacity}")
        return self

    @property
    def group(self) -> str:
        return package_group(self.model)

    @property
    def variants(self) -> list[str]:
        """`production`, and `shadow` when there is one. The names stay when the versions change: SageMaker's
        blue/green update (canary, rollback alarms) needs the new config to keep the variant names."""
        return ["production", *(["shadow"] if self.shadow else [])]


class StageProps(BaseModel):
    """Everything that differs between dev and prod."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    retain: bool = Field(description="keep keys, buckets and logs when a stack is deleted; termination protection")
    cidr: str = "10.40.0.0/16"
    max_azs: int = Field(2, ge=2, le=3)
    nat_gateways: int = Field(1, ge=0, description="egress to the Prefect API; 0 isolates the private subnets")
    noncurrent_days: int = Field(30, ge=1, description="how long overwritten or deleted objects stay restorable")
    capture_days: int = Field(30, ge=1, description="how long captured traffic is kept")
    access_log_days: int = Field(90, ge=1)
    log_days: int = Field(30, ge=1, description="retention of the platform's log groups")
    db_instance: str = Field("t4g.micro", description="the approval server's database instance class")
    audit_days: int = Field(30, ge=1, description="how long S3 Object Lock keeps each audit entry")
    worker_cpu: int = 512
    worker_memory_mib: int = 1024
    budget_usd: float = Field(gt=0, description="monthly cost budget of the stage")
