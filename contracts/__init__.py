"""The names that cross layers: model-version tags, SageMaker resource tags, resource names, strategies and the
instance table. Every layer (the CDK app included) imports them from here; this package imports nothing of
genaiops."""
