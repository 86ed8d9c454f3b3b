var tree = createSprite(100, 300);
tree.setAnimation("tree");
var bee = createSprite(300, 100);
bee.setAnimation("bee");
bee.scale = 0.3;

function draw() {
  background("white");
  bee.x = 300 + 1;
  drawSprites();
}
