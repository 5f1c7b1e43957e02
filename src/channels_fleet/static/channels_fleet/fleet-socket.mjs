// The ES module face of fleet-socket.js (which also works as a classic script).
import "./fleet-socket.js";

export const FleetSocket = globalThis.FleetSocket;
export default FleetSocket;
