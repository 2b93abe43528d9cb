//! gRPC topology/location work: Topology and Location services. OWNER as named; registers its services in `add_services`.

use std::sync::Arc;

use tonic::transport::server::Router;

use crate::node::NodeCore;

pub(crate) fn add_services(router: Router, _core: &Arc<NodeCore>) -> Router {
    router
}
