"""Infrastructure as code: the same serving stack on AWS, GCP and Azure, with Pulumi (`mct infra`).

spec.py           StackSpec: one typed description, checked against what all three clouds accept
component.py      ServingStack: the constructor and outputs every cloud shares; the container's contract
aws.py            S3 + ECS Fargate behind an HTTPS Application Load Balancer
gcp.py            Cloud Storage + Cloud Run (v2)
azure.py          Storage account + Container Apps (azure-native v3)
program.py        the Pulumi program: the stack's spec in, one cloud's component out
shape.py          the serving shape read back from the resources (the parity check)
policy.py         what must hold on every cloud (private, encrypted, HTTPS, read-only, tagged)
prerequisites.py  Pulumi's CLI, the passphrase and the cloud credentials, checked before Pulumi runs
automation.py     the Automation API driver behind `mct infra preview|up|destroy|outputs`
deployed.py       the deployed clouds recorded in the toolkit's settings
Pulumi.yaml       the `mct-serving` project; Pulumi.CLOUD-ENV.yaml: each stack's configuration
image/            what the serving image (../Dockerfile) installs
"""
