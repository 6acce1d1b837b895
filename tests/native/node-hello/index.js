// The smallest useful Node.js handler: what a Node.js cold start costs without any requires.
exports.handler = async () => ({ hello: 'world' });
