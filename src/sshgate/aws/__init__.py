"""AWS access for EC2 and ECS resources: clients, credentials, and target lookups."""
