"""Print, as a JSON list, every AWS region the controller's botocore knows (all partitions).

Read by the role's preflight through the pipe lookup: local data only, no network. Prints []
when botocore is missing, which the preflight reports as such.
"""

import json

try:
    import botocore.session
except ImportError:
    print("[]")
else:
    session = botocore.session.get_session()
    regions = {
        region
        for partition in session.get_available_partitions()
        for region in session.get_available_regions("ec2", partition_name=partition)
    }
    print(json.dumps(sorted(regions)))
