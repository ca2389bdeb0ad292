"""vpcctl: a private, encrypted, cloud-style VPC across your own machines."""

__version__ = "0.1.0"
